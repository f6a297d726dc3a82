//! `custom`: `agent.command` with `agent.args`, executed directly.

use delegate_proto::JobManifest;

use super::Invocation;

/// The program and its arguments as given; no shell is involved.
pub fn invocation(m: &JobManifest) -> Invocation {
    // Validation guarantees a command for `custom`; an empty program would
    // fail to resolve with a clear error rather than panic.
    let program = m.agent.command.clone().unwrap_or_default();
    Invocation {
        label: format!("custom ({program})"),
        program,
        args: m.agent.args.clone(),
        env_defaults: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_passed_verbatim() {
        let m = JobManifest::from_value(serde_json::json!({
            "task": "t", "agentType": "custom",
            "agent": {"command": "/usr/bin/printf", "args": ["%s|", "a b", "$HOME", "; rm -rf /"]}
        }))
        .unwrap();
        let inv = invocation(&m);
        assert_eq!(inv.program, "/usr/bin/printf");
        assert_eq!(inv.args, vec!["%s|", "a b", "$HOME", "; rm -rf /"]);
    }
}
