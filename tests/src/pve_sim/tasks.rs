//! Asynchronous tasks as PVE runs them: the API call answers at once with a
//! UPID; a worker on the node does the work after the simulated duration,
//! writes its log, and ends `OK` or with the error as its exit status.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::SimInner;
use super::state::{Cluster, Task};

/// Creates the task record and returns its UPID.
pub fn create(cluster: &mut Cluster, node: &str, kind: &str, id: &str, user: &str) -> String {
    cluster.next_pid += 1;
    let pid = cluster.next_pid;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pstart = pid.wrapping_mul(7919) % 0x0FFF_FFFF;
    let upid = format!("UPID:{node}:{pid:08X}:{pstart:08X}:{now:08X}:{kind}:{id}:{user}:");
    cluster.tasks.insert(
        upid.clone(),
        Task {
            upid: upid.clone(),
            node: node.to_string(),
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
            pid,
            starttime: now,
            exitstatus: None,
            log: Vec::new(),
        },
    );
    upid
}

/// Ends a task: `OK`, or the error as exit status and last log line.
pub fn finish(cluster: &mut Cluster, upid: &str, result: Result<Vec<String>, String>) {
    if let Some(t) = cluster.tasks.get_mut(upid) {
        match result {
            Ok(lines) => {
                t.log.extend(lines);
                t.log.push("TASK OK".into());
                t.exitstatus = Some("OK".into());
            }
            Err(e) => {
                t.log.push(e.clone());
                t.log.push(format!("TASK ERROR: {e}"));
                t.exitstatus = Some(e);
            }
        }
    }
}

/// Who runs what, where.
pub struct TaskSpec<'a> {
    /// Node.
    pub node: &'a str,
    /// Task type (`qmclone`, ...).
    pub kind: &'a str,
    /// Object id.
    pub id: &'a str,
    /// Who started it.
    pub user: &'a str,
}

/// Starts a worker: after `delay` (plus any injected extra), `work` runs
/// under the cluster lock and its result ends the task.
pub fn spawn<F>(
    sim: &Arc<SimInner>,
    cluster: &mut Cluster,
    spec: TaskSpec<'_>,
    delay: Duration,
    work: F,
) -> String
where
    F: FnOnce(&mut Cluster, &SimInner) -> Result<Vec<String>, String> + Send + 'static,
{
    let upid = create(cluster, spec.node, spec.kind, spec.id, spec.user);
    let delay = delay + cluster.faults.extra_task_delay;
    let sim = sim.clone();
    let task_upid = upid.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut cluster = sim.lock();
        let result = work(&mut cluster, &sim);
        finish(&mut cluster, &task_upid, result);
    });
    upid
}
