//! `script`: `bash -c <agent.command or task>`, exactly as written.

use delegate_proto::JobManifest;

use super::Invocation;

/// `bash -c SCRIPT`, where SCRIPT is `agent.command` or else `task`. The
/// script is one argv element; bash reads it as the user wrote it.
pub fn invocation(m: &JobManifest) -> Invocation {
    let script = m.agent.command.clone().unwrap_or_else(|| m.task.clone());
    Invocation {
        program: "bash".into(),
        args: vec!["-c".into(), script],
        env_defaults: Vec::new(),
        label: "script (bash -c)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(json: serde_json::Value) -> JobManifest {
        JobManifest::from_value(json).unwrap()
    }

    #[test]
    fn task_is_the_script_when_there_is_no_command() {
        let m =
            manifest(serde_json::json!({"task": "echo \"$HOME\"; ls *", "agentType": "script"}));
        let inv = invocation(&m);
        assert_eq!(inv.program, "bash");
        assert_eq!(inv.args, vec!["-c", "echo \"$HOME\"; ls *"]);
    }

    #[test]
    fn command_wins_over_task() {
        let m = manifest(serde_json::json!({
            "task": "describe", "agentType": "script", "agent": {"command": "make test"}
        }));
        assert_eq!(invocation(&m).args, vec!["-c", "make test"]);
    }
}
