//! The bootstrap a provider hands a VM (file, fw_cfg, SMBIOS) and the
//! micro VM's kernel command line: any bytes give a checked bootstrap or an
//! error, never a panic.
#![no_main]

use delegate_guest::init::InitConfig;
use delegate_proto::bootstrap::{Bootstrap, callback_address};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bootstrap::from_json(data) {
        b.check().expect("a parsed bootstrap passes its own check");
        let _ = callback_address(&b.callback_url);
        let _ = format!("{b:?}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = callback_address(text);
        let _ = InitConfig::parse(text);
    }
});
