//! The one reaper of the process: a thread that waits for any child.
//!
//! It first looks at an exited child without reaping it (`WNOWAIT`), then
//! takes the spawn lock and reaps that pid. A spawn holds the same lock from
//! fork until the pid is registered, so a child that exits at once is never
//! reaped before someone waits for it, and `std`'s own reaping of a child
//! whose exec failed (inside `Command::spawn`) is never raced. Orphans that
//! re-parent to the runner (it is a child subreaper) are reaped here too.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(nix::sys::signal::Signal),
}

impl ExitStatus {
    /// The exit code, when it exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }

    /// The signal's name (`SIGKILL`), when a signal ended it.
    pub fn signal_name(self) -> Option<String> {
        match self {
            ExitStatus::Code(_) => None,
            ExitStatus::Signal(s) => Some(s.as_str().to_string()),
        }
    }
}

/// The process-wide reaper.
pub struct Reaper {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    generation: u64,
    waiters: HashMap<i32, oneshot::Sender<ExitStatus>>,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

impl Reaper {
    /// The reaper, started on first use.
    pub fn global() -> &'static Reaper {
        REAPER.get_or_init(|| {
            let shared = Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            });
            let thread_shared = shared.clone();
            // If the thread cannot start, children are never reaped; that
            // is a broken process, not a job failure.
            std::thread::Builder::new()
                .name("reaper".into())
                .spawn(move || reap_forever(&thread_shared))
                .expect("cannot start the reaper thread");
            Reaper { shared }
        })
    }

    /// Runs `spawn` (which forks and returns the child's pid) under the
    /// spawn lock and registers the pid, returning the pid, `spawn`'s value
    /// and where the exit status arrives.
    pub fn spawn_guarded<T>(
        &self,
        spawn: impl FnOnce() -> std::io::Result<(i32, T)>,
    ) -> std::io::Result<(i32, T, oneshot::Receiver<ExitStatus>)> {
        let mut st = self.shared.lock();
        let (pid, value) = spawn()?;
        let (tx, rx) = oneshot::channel();
        st.waiters.insert(pid, tx);
        st.generation += 1;
        drop(st);
        self.shared.wake.notify_all();
        Ok((pid, value, rx))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn reap_forever(shared: &Shared) {
    loop {
        let generation = shared.lock().generation;
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(peeked) => {
                let Some(pid) = peeked.pid() else { continue };
                let mut st = shared.lock();
                let status = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signal(sig),
                    // Reaped by someone else meanwhile (std after a failed exec).
                    Ok(_) | Err(Errno::ECHILD) => continue,
                    Err(e) => {
                        tracing::warn!("reaping {pid}: {e}");
                        continue;
                    }
                };
                match st.waiters.remove(&pid.as_raw()) {
                    Some(tx) => {
                        let _ = tx.send(status);
                    }
                    None => tracing::debug!("reaped orphan {pid}: {status:?}"),
                }
            }
            Err(Errno::ECHILD) => {
                // No children: sleep until a spawn registers one.
                let mut st = shared.lock();
                while st.generation == generation {
                    st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("waitid: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// The pid as nix wants it.
pub fn pid(raw: i32) -> Pid {
    Pid::from_raw(raw)
}
