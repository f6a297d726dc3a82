//! Artifacts: globs relative to the workspace, a tar.gz with sha256 and size
//! per file, collected on every outcome, never following symlinks, capped.

use std::io::Read;
use std::path::Path;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::LONG;
use crate::support::host::hex;
use crate::support::runner::{Job, tempdir, wait_until};

fn read_archive(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            (e.path().unwrap().display().to_string(), body)
        })
        .collect()
}

const MAKE: &str = "mkdir -p out/sub && echo one > out/a.txt && printf 'two\\0' > out/sub/b.bin && echo top > top.log && ln -s /etc/passwd out/passwd && ln -s /etc out/etc";

#[test]
fn globs_select_files_and_each_has_size_and_sha256() {
    let m = json!({"task": MAKE, "agentType": "script", "artifacts": ["out/**", "*.log", "/workspace/missing/*"]});
    let job = Job::new(&m);
    let archive = job.path("a.tar.gz");
    let job = job
        .arg("--artifacts-out")
        .arg(archive.display().to_string());
    let f = job.run();
    f.expect_code(0);
    let listed: Vec<(String, u64, String)> = f.result()["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap().into(),
                a["size"].as_u64().unwrap(),
                a["sha256"].as_str().unwrap().into(),
            )
        })
        .collect();
    let files = read_archive(&archive);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["out/a.txt", "out/sub/b.bin", "top.log"],
        "symlinks must not be packed"
    );
    for ((name, body), (lpath, lsize, lsha)) in files.iter().zip(&listed) {
        assert_eq!(name, lpath);
        assert_eq!(body.len() as u64, *lsize);
        assert_eq!(&hex(&Sha256::digest(body)), lsha);
    }
    assert_eq!(files[1].1, b"two\0");
}

#[test]
fn artifacts_are_collected_on_failure_timeout_and_cancel() {
    // failure
    let m = json!({"task": "echo partial > r.txt; exit 2", "agentType": "script", "artifacts": ["*.txt"]});
    let f = Job::new(&m).run();
    f.expect_code(1);
    assert_eq!(f.result()["artifacts"][0]["path"], "r.txt");
    // timeout
    let m = json!({"task": "echo partial > r.txt; sleep 600", "agentType": "script", "timeout": 1, "artifacts": ["*.txt"]});
    let f = Job::new(&m).arg("--grace-seconds").arg("2").run();
    f.expect_code(124);
    assert_eq!(f.result()["artifacts"][0]["path"], "r.txt");
    // cancel
    let m = json!({"task": "echo partial > r.txt; sleep 600", "agentType": "script", "artifacts": ["*.txt"]});
    let job = Job::new(&m);
    let archive = job.path("c.tar.gz");
    let job = job
        .arg("--artifacts-out")
        .arg(archive.display().to_string());
    let mut run = job.start();
    run.wait_for_phase("running");
    wait_until("r.txt", LONG, || job.ws().join("r.txt").exists());
    run.signal(Signal::SIGTERM);
    let f = run.finish();
    f.expect_code(130);
    assert_eq!(f.result()["artifacts"][0]["size"], 8);
    assert_eq!(
        read_archive(&archive),
        [("r.txt".to_string(), b"partial\n".to_vec())]
    );
}

#[test]
fn the_size_cap_fails_clearly() {
    let m = json!({"task": "head -c 3000 /dev/zero > big.bin", "agentType": "script", "artifacts": ["*.bin"]});
    let f = Job::new(&m).arg("--max-artifact-bytes").arg("2K").run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error_kind"], "artifacts");
    let e = r["error"].as_str().unwrap();
    assert!(
        e.contains("3000 bytes") && e.contains("cap of 2048 bytes"),
        "{e}"
    );
    assert_eq!(r["exit_code"], 0, "the agent itself succeeded");

    // On a job that already failed, the cap is added to its error.
    let m = json!({"task": "head -c 3000 /dev/zero > big.bin; exit 5", "agentType": "script", "artifacts": ["*.bin"]});
    let f = Job::new(&m).arg("--max-artifact-bytes").arg("2K").run();
    f.expect_code(1);
    assert_eq!(f.result()["error_kind"], "exit");
    assert!(
        f.result()["error"]
            .as_str()
            .unwrap()
            .contains("cap of 2048")
    );
}

#[test]
fn the_runners_private_directory_is_not_collected_and_no_globs_means_no_archive_entries() {
    let m = json!({"task": "echo x > \"$HOME/cfg\"; echo y > f.txt", "agentType": "script", "artifacts": ["**"]});
    let f = Job::new(&m).run();
    f.expect_code(0);
    let paths: Vec<&str> = f.result()["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["f.txt"]);

    let dir = tempdir();
    let archive = dir.path().join("empty.tar.gz");
    let f = Job::new(&json!({"task": "true", "agentType": "script"}))
        .arg("--artifacts-out")
        .arg(archive.display().to_string())
        .run();
    f.expect_code(0);
    assert_eq!(f.result()["artifacts"], Value::Array(vec![]));
    assert!(read_archive(&archive).is_empty());
}
