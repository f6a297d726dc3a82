//! Claude Code's stream-json, as the guest reads it from the agent's stdout:
//! any bytes, split at any points, never panic the parser, and what it
//! reports stays within its bounds.
#![no_main]

use delegate_guest::agent::stream_json::StreamJsonParser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first bytes choose max_turns and where the stream is cut into
    // reads; the rest is the stream.
    let Some((&turns, rest)) = data.split_first() else {
        return;
    };
    let Some((&cut, stream)) = rest.split_first() else {
        return;
    };
    let max_turns = (turns != 0).then_some(u32::from(turns));
    let step = usize::from(cut).max(1);
    let mut parser = StreamJsonParser::new(max_turns);
    let mut out = Vec::new();
    for piece in stream.chunks(step) {
        parser.push(piece, &mut out);
    }
    parser.finish(&mut out);
    for update in &out {
        if let Some(p) = update.percent {
            assert!((0.0..=100.0).contains(&p), "percent {p} out of range");
        }
    }
    let _ = parser.take_result();
});
