//! Manifest parsing and validation: what parses, and for what does not, the
//! field and the rule named in the error.

use delegate_proto::{AgentType, JobManifest, Lifecycle, StatusMode};
use serde_json::{Value, json};

fn base() -> Value {
    json!({"task": "echo hi", "agentType": "script"})
}

fn with(patch: Value) -> Value {
    let mut v = base();
    for (k, val) in patch.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

/// The base manifest with `field` set to `value`.
fn with_field(field: &str, value: Value) -> Value {
    let mut v = base();
    v[field] = value;
    v
}

/// The base manifest with one input file, `entry`.
fn with_file(entry: Value) -> Value {
    with_field("files", json!([entry]))
}

/// The base manifest with one empty input file at `path`.
fn with_file_at(path: &str) -> Value {
    with_file(json!({"path": path, "content": ""}))
}

/// Asserts that `manifest` is refused at `field` by a rule that says `rule`.
fn assert_refused(manifest: &Value, field: &str, rule: &str) {
    let err = JobManifest::from_value(manifest.clone())
        .expect_err(&format!("{manifest} should be refused"));
    assert_eq!(err.field, field, "{manifest}: {err}");
    assert!(
        err.rule.contains(rule),
        "{manifest}: rule {:?} lacks {rule:?}",
        err.rule
    );
    assert!(
        err.to_string().contains(field),
        "message names the field: {err}"
    );
}

#[test]
fn original_server_example_parses_unchanged() {
    // The shape of the original TypeScript server's JobManifest, every field.
    let m = JobManifest::from_json(
        br#"{
          "task": "Write a fibonacci function in Python and test it",
          "agentType": "claude",
          "agent": {"claudeModel": "claude-sonnet-4-5"},
          "files": [{"path": "/workspace/code.py", "content": "cHJpbnQoMSkK"}],
          "env": {"ANTHROPIC_API_KEY": "sk-ant-xxx", "DEBUG": "1"},
          "secrets": ["ANTHROPIC_API_KEY"],
          "resources": {"cpu": 2, "memory": "4G", "disk": "20G"},
          "timeout": 1800,
          "lifecycle": "ephemeral",
          "vmTemplate": "claude-agent-template",
          "statusMode": "streaming"
        }"#,
    )
    .unwrap();
    assert_eq!(m.agent_type, AgentType::Claude);
    assert_eq!(m.lifecycle(), Lifecycle::Ephemeral);
    assert_eq!(m.status_mode(), StatusMode::Streaming);
    assert_eq!(m.resources.as_ref().unwrap().cpu_count(), Some(2));
    assert_eq!(m.resources.as_ref().unwrap().memory_bytes(), Some(4 << 30));
    assert_eq!(m.secret_values(), vec!["sk-ant-xxx"]);
    let red = serde_json::to_string(&m.redacted()).unwrap();
    assert!(!red.contains("sk-ant-xxx"));
    // Round trip: serialize and parse again gives the same manifest.
    let again = JobManifest::from_json(&serde_json::to_vec(&m).unwrap()).unwrap();
    assert_eq!(again, m);
}

#[test]
fn defaults_apply() {
    let m = JobManifest::from_value(base()).unwrap();
    assert_eq!(m.status_mode(), StatusMode::Detailed);
    assert_eq!(m.lifecycle(), Lifecycle::Ephemeral);
    assert_eq!(m.timeout_or(3600), 3600);
}

#[test]
fn valid_variants_parse() {
    let ok = [
        with(
            json!({"agentType": "custom", "agent": {"command": "/bin/echo", "args": ["a; rm -rf /", "$(x)"]}}),
        ),
        with_file(json!({"path": "src/main.py", "content": "", "mode": 493})),
        with_file(json!({"path": "./bin/run", "content": "eA==", "mode": "0755"})),
        with(json!({"resources": {"cpu": 128, "memory": "512M"}})),
        with(json!({"timeout": 604800})),
        with(json!({"artifacts": ["out/**", "/workspace/*.log", "report-?.txt"]})),
        with(json!({"env": {"_X1": "", "PATH_EXTRA": "/opt"}})),
        with(
            json!({"agentType": "claude", "agent": {"maxTurns": 3, "permissionMode": "acceptEdits", "allowedTools": ["Bash", "Read"]}}),
        ),
        with(json!({"vmTemplate": "9000"})),
    ];
    for v in ok {
        JobManifest::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}

#[test]
fn validation_table_names_field_and_rule() {
    // (manifest, field, words the rule must contain)
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"agentType": "script"}), "$", "missing field `task`"),
        (json!({"task": "x"}), "$", "missing field `agentType`"),
        (with(json!({"task": "  "})), "task", "must not be empty"),
        (with(json!({"task": "a\u{0}b"})), "task", "NUL"),
        (
            with(json!({"agentType": "robot"})),
            "agentType",
            "unknown variant `robot`",
        ),
        (
            with(json!({"timout": 5})),
            "timout",
            "unknown field `timout`",
        ),
        (
            with(json!({"agentType": "custom"})),
            "agent.command",
            "required when agentType is custom",
        ),
        (
            with(json!({"agent": {"args": ["x"]}})),
            "agent.args",
            "only used when agentType is custom",
        ),
        (
            with(json!({"agent": {"permissionMode": "yolo"}})),
            "agent.permissionMode",
            "must be one of",
        ),
        (
            with(json!({"agent": {"maxTurns": 0}})),
            "agent.maxTurns",
            "at least 1",
        ),
        (with_file_at("../etc/passwd"), "files[0].path", "'..'"),
        (with_file_at("a/../../b"), "files[0].path", "'..'"),
        (
            with_file_at("/etc/passwd"),
            "files[0].path",
            "absolute outside /workspace",
        ),
        (
            with_file_at("/workspacex/a"),
            "files[0].path",
            "absolute outside /workspace",
        ),
        (
            with_file_at("/workspace"),
            "files[0].path",
            "absolute outside",
        ),
        (
            with_file_at("/workspace/"),
            "files[0].path",
            "does not name anything",
        ),
        (with_file_at(""), "files[0].path", "does not name anything"),
        (with_file_at("a\\b"), "files[0].path", "separator"),
        (
            with_file(json!({"path": "a", "content": "!!!"})),
            "files[0].content",
            "not valid base64",
        ),
        (
            with_field(
                "files",
                json!([{"path": "a", "content": ""}, {"path": "./a", "content": ""}]),
            ),
            "files[1].path",
            "given twice",
        ),
        (
            with_field(
                "files",
                json!([{"path": "a", "content": ""}, {"path": "a/b", "content": ""}]),
            ),
            "files[0].path",
            "both a file and the directory",
        ),
        (
            with_file(json!({"path": "a", "content": "", "mode": 2541})),
            "files[0].mode",
            "no setuid",
        ),
        (
            with_file(json!({"path": "a", "content": "", "mode": "rwx"})),
            "files[0].mode",
            "octal",
        ),
        (
            with(json!({"resources": {"cpu": 0}})),
            "resources.cpu",
            "whole number from 1 to 128",
        ),
        (
            with(json!({"resources": {"cpu": 1.5}})),
            "resources.cpu",
            "whole number",
        ),
        (
            with(json!({"resources": {"cpu": 129}})),
            "resources.cpu",
            "whole number",
        ),
        (
            with(json!({"resources": {"cpu": "2"}})),
            "resources.cpu",
            "invalid type",
        ),
        (
            with(json!({"resources": {"memory": "lots"}})),
            "resources.memory",
            "like 512M",
        ),
        (
            with(json!({"resources": {"memory": "1M"}})),
            "resources.memory",
            "at least 32M",
        ),
        (
            with(json!({"resources": {"memory": "1000000T"}})),
            "resources.memory",
            "at most 4T, got 1000000T",
        ),
        (
            with(json!({"resources": {"disk": "2X"}})),
            "resources.disk",
            "like 512M",
        ),
        (
            with(json!({"timeout": 0})),
            "timeout",
            "between 1 and 604800",
        ),
        (
            with(json!({"timeout": 604801})),
            "timeout",
            "between 1 and 604800",
        ),
        (with(json!({"timeout": -1})), "timeout", "invalid value"),
        (
            with(json!({"env": {"1BAD": "x"}})),
            "env.1BAD",
            "valid variable name",
        ),
        (
            with(json!({"env": {"A-B": "x"}})),
            "env.A-B",
            "valid variable name",
        ),
        (with(json!({"env": {"A": "x\u{0}"}})), "env.A", "NUL"),
        (
            with(json!({"secrets": ["TOKEN"]})),
            "secrets[0]",
            "not in env",
        ),
        (with(json!({"artifacts": ["../x"]})), "artifacts[0]", "'..'"),
        (
            with(json!({"artifacts": ["/etc/*"]})),
            "artifacts[0]",
            "absolute outside",
        ),
        (
            with(json!({"artifacts": ["a[b"]})),
            "artifacts[0]",
            "not a valid glob",
        ),
        (
            with(json!({"lifecycle": "forever"})),
            "lifecycle",
            "unknown variant",
        ),
        (
            with(json!({"statusMode": "loud"})),
            "statusMode",
            "unknown variant",
        ),
        (
            with(json!({"vmTemplate": "a b"})),
            "vmTemplate",
            "VMID or a template name",
        ),
        (
            with(json!({"agent": {"claudeModel": "x; rm"}})),
            "agent.claudeModel",
            "model name",
        ),
        (
            with_file(json!({"path": "a", "content": "", "extra": 1})),
            "files[0].extra",
            "unknown field `extra`",
        ),
    ];
    for (manifest, field, rule) in cases {
        assert_refused(&manifest, field, rule);
    }
}

#[test]
fn size_cap_applies_before_parsing() {
    let big = vec![b' '; delegate_proto::manifest::MAX_MANIFEST_BYTES + 1];
    let err = JobManifest::from_json(&big).unwrap_err();
    assert_eq!(err.field, "$");
    assert!(err.rule.contains("limit"));
}

#[test]
fn decoded_files_are_capped() {
    let chunk = "A".repeat(4 * 1024 * 1024); // 3 MiB decoded each
    let files: Vec<Value> = (0..6)
        .map(|i| json!({"path": format!("f{i}"), "content": chunk}))
        .collect();
    let err = JobManifest::from_value(with(json!({ "files": files }))).unwrap_err();
    assert_eq!(err.field, "files[5].content");
    assert!(err.rule.contains("in total"));
}

#[test]
fn garbage_json_is_an_error_not_a_panic() {
    for bytes in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        b"{\"task\":1}",
        b"{} {}",
        b"\xff\xfe",
    ] {
        assert!(JobManifest::from_json(bytes).is_err());
    }
}

#[test]
fn repository_text_files_and_budget_rules_name_their_fields() {
    let cases = [
        (
            with_file(json!({"path": "a", "content": "aGk=", "text": "hi"})),
            "files[0].content",
            "not both",
        ),
        (
            with_file(json!({"path": "a"})),
            "files[0].content",
            "content (base64) or text",
        ),
        (
            with_file(json!({"path": "a", "text": "nul\u{0}"})),
            "files[0].text",
            "NUL",
        ),
        (
            with(json!({"repo": {"path": "relative/dir"}})),
            "repo.path",
            "absolute",
        ),
        (
            with(json!({"repo": {"path": "/src/p", "dir": "../x"}})),
            "repo.dir",
            "'..'",
        ),
        (
            with(json!({"repo": {"path": "/src/p", "dir": ".delegate/x"}})),
            "repo.dir",
            "runner's own directory",
        ),
        (
            with(json!({"repo": {"path": "/p", "url": "https://example.com/r.git"}})),
            "repo",
            "not both",
        ),
        (
            with(json!({"repo": {"url": "file:///etc"}})),
            "repo.url",
            "not allowed",
        ),
        (
            with(json!({"repo": {"url": "ext::sh -c x"}})),
            "repo.url",
            "without spaces",
        ),
        (
            with(json!({"repo": {"url": "https://u:secret@example.com/r.git"}})),
            "repo.url",
            "credentials",
        ),
        (
            with(json!({"repo": {"url": "https://example.com/r.git", "ref": "--upload-pack=x"}})),
            "repo.ref",
            "not starting with '-'",
        ),
        (
            with(json!({"repo": {"path": "/p", "ref": "main"}})),
            "repo.ref",
            "only used with repo.url",
        ),
        (
            with(json!({"collect": {"patch": true}})),
            "collect.patch",
            "needs repo",
        ),
        (
            with(json!({"agentType": "claude", "agent": {"maxBudgetUsd": 0}})),
            "agent.maxBudgetUsd",
            "above 0",
        ),
        (
            with(json!({"agent": {"maxBudgetUsd": 2}})),
            "agent.maxBudgetUsd",
            "only used when agentType is claude",
        ),
    ];
    for (manifest, field, rule) in cases {
        assert_refused(&manifest, field, rule);
    }
    let ok = JobManifest::from_value(with(json!({
        "files": [{"path": "a.txt", "text": "plain ünïcode\n"}],
        "repo": {"path": "/home/me/project", "dir": "/workspace/src"},
    })))
    .unwrap();
    assert_eq!(ok.files[0].bytes().unwrap(), "plain ünïcode\n".as_bytes());
    assert!(ok.wants_patch(), "a repository means a patch by default");
    assert_eq!(
        ok.repo.as_ref().unwrap().relative_dir().as_deref(),
        Some("src")
    );
    let off = JobManifest::from_value(with(json!({
        "repo": {"path": "/p"}, "collect": {"patch": false},
    })))
    .unwrap();
    assert!(!off.wants_patch());
}
