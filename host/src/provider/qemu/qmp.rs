//! A minimal QMP client: connect to a VM's monitor socket, leave
//! negotiation mode, run one command: quit, pause and resume a VM, ask
//! its status.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Sends `command` (e.g. `quit`) and waits for its answer, all within
/// `limit`. Events QEMU sends meanwhile are skipped.
pub async fn execute(socket: &Path, command: &str, limit: Duration) -> Result<(), String> {
    query(socket, command, limit).await.map(drop)
}

/// [`execute`], returning what the command returned (`null` for a `quit`
/// QEMU ended before answering).
pub async fn query(
    socket: &Path,
    command: &str,
    limit: Duration,
) -> Result<serde_json::Value, String> {
    tokio::time::timeout(limit, run(socket, command))
        .await
        .map_err(|_| format!("QMP {command}: no answer within {limit:?}"))?
}

async fn run(socket: &Path, command: &str) -> Result<serde_json::Value, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // The greeting, then capabilities negotiation, then the command.
    answer(&mut lines, "greeting", |v| v.get("QMP").is_some()).await?;
    let mut returned = serde_json::Value::Null;
    for cmd in ["qmp_capabilities", command] {
        let msg = serde_json::json!({ "execute": cmd }).to_string() + "\n";
        write
            .write_all(msg.as_bytes())
            .await
            .map_err(|e| format!("QMP {cmd}: {e}"))?;
        let reply = answer(&mut lines, cmd, |v| {
            v.get("return").is_some() || v.get("error").is_some()
        })
        .await;
        match reply {
            Ok(v) if v.get("error").is_some() => return Err(format!("QMP {cmd}: {v}")),
            Ok(mut v) => returned = v["return"].take(),
            // QEMU may close the socket as it quits, before answering.
            Err(_) if cmd == "quit" => return Ok(serde_json::Value::Null),
            Err(e) => return Err(e),
        }
    }
    Ok(returned)
}

async fn answer(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, String> {
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| format!("QMP {what}: {e}"))?
            .ok_or_else(|| format!("QMP {what}: the socket closed"))?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("QMP {what}: {e}: {line}"))?;
        if wanted(&v) {
            return Ok(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a real QEMU that runs no guest (`-machine none -S`): needs
    /// qemu-system-x86_64 on PATH, as the provider does.
    #[tokio::test]
    async fn quit_ends_qemu_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let mut qemu = tokio::process::Command::new(super::super::settings::QEMU_BINARY)
            .args([
                "-machine",
                "none",
                "-S",
                "-nodefaults",
                "-display",
                "none",
                "-qmp",
            ])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .kill_on_drop(true)
            .spawn()
            .expect("qemu-system-x86_64 is installed");
        let mut waited = 0;
        while !sock.exists() && waited < 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        let status = query(&sock, "query-status", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(status["status"], "prelaunch", "{status}");
        execute(&sock, "quit", Duration::from_secs(10))
            .await
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), qemu.wait())
            .await
            .expect("QEMU quits")
            .unwrap();
        assert!(status.success(), "{status}");
        let err = execute(
            &dir.path().join("none.sock"),
            "quit",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(err.contains("none.sock"), "{err}");
    }
}
