//! The JSON Schema of a job manifest, as `submit_job` publishes it.
//!
//! proto's `JobManifest` is the contract and does the validation; this
//! schema only tells a client (and the model behind it) which fields exist
//! and what they mean. It is written by hand because proto stays free of
//! schema dependencies; a test below keeps its property names in step with
//! what `JobManifest` serializes.

use serde_json::{Value, json};

/// The schema of the `manifest` argument of `submit_job`.
pub fn manifest() -> Value {
    json!({
        "type": "object",
        "description": "The job to run. Only task and agentType are required. Unknown fields are refused.",
        "required": ["task", "agentType"],
        "additionalProperties": false,
        "properties": {
            "task": {
                "type": "string",
                "minLength": 1,
                "description": "What to do: the prompt for claude, the bash script for script when agent.command is absent, a description otherwise."
            },
            "agentType": {
                "type": "string",
                "enum": ["claude", "script", "custom"],
                "description": "claude: Claude Code in print mode; script: bash runs agent.command (or task); custom: agent.command with agent.args, no shell."
            },
            "agent": {
                "type": "object",
                "additionalProperties": false,
                "description": "Agent details; which apply depends on agentType.",
                "properties": {
                    "command": {"type": "string", "description": "script: the bash script. custom: the program. claude: the claude executable to use."},
                    "args": {"type": "array", "items": {"type": "string"}, "description": "custom: the program's arguments, passed as they are."},
                    "claudeModel": {"type": "string", "description": "claude: the model, e.g. sonnet."},
                    "maxTurns": {"type": "integer", "minimum": 1, "description": "claude: --max-turns."},
                    "allowedTools": {"type": "array", "items": {"type": "string"}, "description": "claude: --allowedTools."},
                    "disallowedTools": {"type": "array", "items": {"type": "string"}, "description": "claude: --disallowedTools."},
                    "permissionMode": {
                        "type": "string",
                        "enum": delegate_proto::manifest::CLAUDE_PERMISSION_MODES,
                        "description": "claude: --permission-mode."
                    },
                    "appendSystemPrompt": {"type": "string", "description": "claude: --append-system-prompt."},
                    "maxBudgetUsd": {"type": "number", "exclusiveMinimum": 0, "description": "claude: --max-budget-usd, the most the run may spend in US dollars (the host's DELEGATE_MAX_BUDGET_USD caps it and is the default)."}
                }
            },
            "files": {
                "type": "array",
                "description": "Files written into the workspace before the agent starts.",
                "items": {
                    "type": "object",
                    "required": ["path"],
                    "additionalProperties": false,
                    "properties": {
                        "path": {"type": "string", "description": "Relative to the workspace (or absolute under /workspace); cannot leave it."},
                        "content": {"type": "string", "contentEncoding": "base64", "description": "The content, base64 (standard alphabet). Exactly one of content and text."},
                        "text": {"type": "string", "description": "The content as UTF-8 text, written as it is. Exactly one of content and text."},
                        "mode": {
                            "type": ["integer", "string"],
                            "description": "Permission bits: a number (493 is 0o755) or an octal string such as \"0755\"."
                        }
                    }
                }
            },
            "env": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Environment variables for the agent."
            },
            "secrets": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Names of env entries whose values are secret: never shown in status, logs or listings."
            },
            "resources": {
                "type": "object",
                "additionalProperties": false,
                "description": "What the VM gets; the host's defaults apply to what is left out.",
                "properties": {
                    "cpu": {"type": "integer", "minimum": 1, "maximum": delegate_proto::manifest::MAX_CPU},
                    "memory": {"type": "string", "description": "Such as 512M or 2G (at least 32M). Units are binary: 2G, 2GB and 2GiB all mean 2 × 1024³ bytes."},
                    "disk": {"type": "string", "description": "Such as 10G (binary units, as for memory)."}
                }
            },
            "timeout": {
                "type": "integer",
                "minimum": 1,
                "maximum": delegate_proto::manifest::MAX_TIMEOUT_SECONDS,
                "description": "Wall-clock limit for the job in seconds, counted from when it starts provisioning (provisioning included; time spent pending for a free VM slot is not, the host's queue timeout covers that)."
            },
            "lifecycle": {
                "type": "string",
                "enum": ["ephemeral", "persistent"],
                "description": "ephemeral (default): the VM is destroyed when the job ends; persistent: kept for inspection."
            },
            "statusMode": {
                "type": "string",
                "enum": ["simple", "detailed", "streaming"],
                "description": "simple: phases and result; detailed (default): plus progress and heartbeats; streaming: plus the output as it is written (needed for get_job_logs while running)."
            },
            "artifacts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Globs relative to the workspace of files to collect, e.g. out/** or report.md."
            },
            "vmTemplate": {"type": "string", "description": "Template to use instead of the host's default."},
            "network": {
                "type": "object",
                "additionalProperties": false,
                "description": "Destinations the job may reach through the host's egress gateway. Without it the job reaches no network at all.",
                "properties": {
                    "allow": {"type": "array", "items": {"type": "string"}, "description": "pypi.org, *.pythonhosted.org, github.com:443, * for any (within the host's ceiling), or a host preset such as @python, @node, @git."},
                    "deny": {"type": "array", "items": {"type": "string"}, "description": "Patterns refused even when allow matches them."}
                }
            },
            "secretEnv": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Variable name to the name of a secret the host holds, e.g. {\"GITHUB_TOKEN\": \"github\"}. The value is set in the job without passing through this call; never put keys in env."
            },
            "repo": {
                "type": "object",
                "required": ["path"],
                "additionalProperties": false,
                "description": "A git repository on the host's machine, delivered into the workspace as it is on disk (HEAD plus uncommitted and untracked files, .git included). The result then carries a patch of every change.",
                "properties": {
                    "path": {"type": "string", "description": "Absolute path of the repository, under the host's DELEGATE_REPO_ROOTS."},
                    "dir": {"type": "string", "description": "Where in the workspace it goes (default: the workspace itself)."}
                }
            },
            "collect": {
                "type": "object",
                "additionalProperties": false,
                "description": "What is collected besides artifacts.",
                "properties": {
                    "patch": {"type": "boolean", "description": "Make a patch of the job's changes to repo (default: true when repo is given)."}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use delegate_proto::JobManifest;

    use super::*;

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// A manifest with every field set, so serialization writes every key.
    fn full_manifest() -> Value {
        json!({
            "task": "t", "agentType": "custom",
            "agent": {"command": "c", "args": ["a"], "claudeModel": "sonnet", "maxTurns": 2,
                      "allowedTools": ["x"], "disallowedTools": ["y"], "permissionMode": "plan",
                      "appendSystemPrompt": "p", "maxBudgetUsd": 1.5},
            "files": [{"path": "a.txt", "content": "aGk=", "text": "hi", "mode": "0644"}],
            "env": {"A": "1"}, "secrets": ["A"],
            "resources": {"cpu": 1, "memory": "64M", "disk": "1G"},
            "timeout": 5, "lifecycle": "ephemeral", "statusMode": "simple",
            "artifacts": ["*.txt"], "vmTemplate": "t1",
            "network": {"allow": ["pypi.org"], "deny": ["x.pypi.org"]},
            "secretEnv": {"GITHUB_TOKEN": "github"},
            "repo": {"path": "/p", "dir": "d"}, "collect": {"patch": true}
        })
    }

    #[test]
    fn properties_match_what_the_manifest_type_writes() {
        // Serialize through the real type: a field added to proto without a
        // place in the schema (or a renamed one) fails here.
        let parsed: JobManifest = serde_json::from_value(full_manifest()).unwrap();
        let written = serde_json::to_value(&parsed).unwrap();
        let schema = manifest();
        assert_eq!(keys(&written), keys(&schema["properties"]));
        assert_eq!(
            keys(&written["agent"]),
            keys(&schema["properties"]["agent"]["properties"])
        );
        assert_eq!(
            keys(&written["files"][0]),
            keys(&schema["properties"]["files"]["items"]["properties"])
        );
        assert_eq!(
            keys(&written["resources"]),
            keys(&schema["properties"]["resources"]["properties"])
        );
        assert_eq!(
            keys(&written["network"]),
            keys(&schema["properties"]["network"]["properties"])
        );
    }
}
