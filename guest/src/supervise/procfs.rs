//! The runner's descendants, read from `/proc`. Because the runner is a
//! child subreaper, every process of the job's tree stays a descendant, even
//! one that left its session with `setsid` and double-forked.

use std::collections::HashMap;

/// A process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    /// Its pid.
    pub pid: i32,
    /// Its parent.
    pub ppid: i32,
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
}

impl ProcInfo {
    /// True for a process that has exited but is not reaped yet.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the content of `/proc/<pid>/stat`. The command name can contain
/// spaces and parentheses, so parsing starts after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcInfo> {
    let pid = text.split_once(' ')?.0.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcInfo { pid, ppid, state })
}

/// Reads one process, `None` when it is gone.
pub fn read(pid: i32) -> Option<ProcInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Every process that descends from `root` (not `root` itself), zombies
/// included.
pub fn descendants(root: i32) -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<i32, Vec<ProcInfo>> = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(info) = read(pid) {
            children.entry(info.ppid).or_default().push(info);
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        if let Some(kids) = children.remove(&p) {
            for k in kids {
                queue.push(k.pid);
                out.push(k);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let info = parse_stat("4242 (we(i)rd name) S 17 4242 4242 0 -1 4194560").unwrap();
        assert_eq!(
            info,
            ProcInfo {
                pid: 4242,
                ppid: 17,
                state: 'S'
            }
        );
        assert!(parse_stat("4242 (x) Z 1 2").unwrap().is_zombie());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn finds_own_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        assert!(descendants(me).iter().any(|p| p.pid == child.id() as i32));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
