//! Choosing how the agent sees its workspace (see `workspace::view`): the
//! mapped view is tried once, as the agent's user and through the same
//! spawn path as the agent, before the agent starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::supervise::{Limits, RunUser, SpawnSpec, spawn};
use crate::workspace::view::WorkspaceView;

/// How long the trial may take (it runs `true`).
const PROBE_WITHIN: Duration = Duration::from_secs(10);

/// The view the agent gets for `workspace`.
pub async fn choose(workspace: &Path, user: Option<&RunUser>) -> WorkspaceView {
    let plan = WorkspaceView::plan(workspace);
    if !matches!(plan, WorkspaceView::Mapped { .. }) {
        return plan;
    }
    match probe(&plan, workspace, user).await {
        Ok(()) => plan,
        Err(reason) => WorkspaceView::failed(&reason),
    }
}

async fn probe(
    view: &WorkspaceView,
    workspace: &Path,
    user: Option<&RunUser>,
) -> Result<(), String> {
    let program = crate::agent::resolve_program("true", crate::env::BASE_PATH, workspace)
        .map_err(|e| e.to_string())?;
    let env = BTreeMap::from([("PATH".to_string(), crate::env::BASE_PATH.to_string())]);
    let (real, root) = view.spawn_view().ok_or("not a mapped view")?;
    let spawned = spawn(SpawnSpec {
        program: &program,
        arg0: "true",
        args: &[],
        env: &env,
        cwd: workspace,
        user,
        limits: Limits::plan(None, user.is_some(), Limits::current_nofile_hard()),
        cgroup: None,
        view: Some((real, &root)),
    })
    .map_err(|e| e.to_string())?;
    let status = tokio::time::timeout(PROBE_WITHIN, spawned.exit)
        .await
        .map_err(|_| format!("no answer within {PROBE_WITHIN:?}"))?
        .map_err(|_| "its exit status was lost".to_string())?;
    match status.code() {
        Some(0) => Ok(()),
        _ => Err(format!("a trial ended with {status:?}")),
    }
}
