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

/// Reads a small /proc file with one read into a stack buffer (std's
/// `read_to_string` probes with several small reads).
fn read_small(path: &str, buf: &mut [u8]) -> Option<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(got)
}

/// Reads one process, `None` when it is gone.
pub fn read(pid: i32) -> Option<ProcInfo> {
    let mut buf = [0u8; 1024];
    let n = read_small(&format!("/proc/{pid}/stat"), &mut buf)?;
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// Every process that descends from `root` (not `root` itself), zombies
/// included. Follows the kernel's per-thread `children` lists when it has
/// them (cost grows with the tree, not with the machine), else scans /proc.
pub fn descendants(root: i32) -> Vec<ProcInfo> {
    match descendants_by_children(root) {
        Some(found) => found,
        None => descendants_by_scan(root),
    }
}

/// True when the kernel has per-thread `children` lists
/// (CONFIG_PROC_CHILDREN), checked once.
fn children_lists_exist() -> bool {
    static EXIST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EXIST.get_or_init(|| {
        let me = std::process::id();
        std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
    })
}

/// Appends the children of every thread of `pid` (threads that exit
/// meanwhile are skipped).
fn children(pid: i32, out: &mut Vec<i32>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    let mut buf = [0u8; 4096];
    for task in tasks.flatten() {
        let path = format!(
            "/proc/{pid}/task/{}/children",
            task.file_name().to_string_lossy()
        );
        let Some(n) = read_small(&path, &mut buf) else {
            continue;
        };
        if n == buf.len() {
            // A long list: read it whole.
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        } else {
            let text = String::from_utf8_lossy(&buf[..n]);
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
}

fn descendants_by_children(root: i32) -> Option<Vec<ProcInfo>> {
    if !children_lists_exist() {
        return None;
    }
    let mut out = Vec::new();
    let mut queue = Vec::new();
    children(root, &mut queue);
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = queue.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some(info) = read(pid) {
            out.push(info);
            children(pid, &mut queue);
        }
    }
    Some(out)
}

fn descendants_by_scan(root: i32) -> Vec<ProcInfo> {
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
