//! The tool catalogue as a real client sees it, in both revisions: names,
//! input and output schemas without Rust number formats, annotations that
//! fit, resource templates, and argument errors that name the field.

use std::time::Duration;

use delegate_tests::mcp::{HostEnv, Revision, connect_stdio};
use serde_json::{Value, json};

fn formats(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(f)) = o.get("format") {
                out.push(f.clone());
            }
            o.values().for_each(|v| formats(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| formats(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn tools_have_schemas_and_annotations_in_both_revisions() {
    for revision in Revision::BOTH {
        let env = HostEnv::new();
        let client = connect_stdio(&env, revision).await;
        let info = client.service.peer_info().expect("server info");
        assert_eq!(info.protocol_version, revision.version(), "{revision:?}");
        let tools = client.service.list_all_tools().await.expect("tools/list");
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cancel_job",
                "continue_job",
                "get_job_logs",
                "get_job_result",
                "get_job_status",
                "list_jobs",
                "release_job",
                "submit_job",
                "wait_for_job"
            ]
        );
        for tool in &tools {
            let input = Value::Object(tool.input_schema.as_ref().clone());
            let output = Value::Object(
                tool.output_schema
                    .clone()
                    .expect("output schema")
                    .as_ref()
                    .clone(),
            );
            for (which, schema) in [("input", &input), ("output", &output)] {
                assert_eq!(schema["type"], "object", "{} {which}", tool.name);
                let mut found = Vec::new();
                formats(schema, &mut found);
                let odd: Vec<_> = found
                    .iter()
                    .filter(|f| f.contains("int") || *f == "double" || *f == "float")
                    .collect();
                assert!(odd.is_empty(), "{} {which} schema has {odd:?}", tool.name);
            }
            assert!(
                tool.description.as_ref().is_some_and(|d| d.len() > 40),
                "{}",
                tool.name
            );
            let a = tool.annotations.as_ref().expect("annotations");
            let read_only = a.read_only_hint == Some(true);
            match tool.name.as_ref() {
                "submit_job" => {
                    assert!(!read_only);
                    assert_eq!(a.destructive_hint, Some(false));
                    assert_eq!(a.idempotent_hint, Some(false));
                    assert_eq!(a.open_world_hint, Some(true));
                }
                "cancel_job" => {
                    assert!(!read_only);
                    assert_eq!(a.destructive_hint, Some(true));
                    assert_eq!(a.idempotent_hint, Some(true));
                }
                "continue_job" => {
                    assert!(!read_only);
                    assert_eq!(a.destructive_hint, Some(false));
                    assert_eq!(a.idempotent_hint, Some(false));
                    assert_eq!(a.open_world_hint, Some(true));
                }
                "release_job" => {
                    assert!(!read_only);
                    assert_eq!(a.destructive_hint, Some(true));
                }
                _ => assert!(read_only, "{} should be read-only", tool.name),
            }
        }
        let cont = tools.iter().find(|t| t.name == "continue_job").unwrap();
        assert_eq!(cont.input_schema["required"], json!(["job_id", "task"]));
        let props = cont.input_schema["properties"].as_object().unwrap();
        assert!(props.contains_key("max_budget_usd"), "{props:?}");
        let out = cont.output_schema.as_ref().unwrap();
        for key in ["job_id", "session_id", "turn", "status"] {
            assert!(
                out["properties"].get(key).is_some(),
                "continue_job output lacks {key}"
            );
        }
        let status = tools.iter().find(|t| t.name == "get_job_status").unwrap();
        let status_out = status.output_schema.as_ref().unwrap();
        assert!(
            status_out["properties"].get("session").is_some(),
            "get_job_status shows a persistent job's session"
        );
        let submit = tools.iter().find(|t| t.name == "submit_job").unwrap();
        let manifest = &submit.input_schema["properties"]["manifest"];
        assert_eq!(manifest["required"], json!(["task", "agentType"]));
        assert_eq!(
            manifest["properties"]["agentType"]["enum"],
            json!(["claude", "script", "custom"])
        );

        let templates = client
            .service
            .list_all_resource_templates()
            .await
            .expect("resources/templates/list");
        let uris: Vec<_> = templates.iter().map(|t| t.uri_template.clone()).collect();
        assert!(
            uris.contains(&"delegate://jobs/{job_id}/log".to_string()),
            "{uris:?}"
        );
        assert!(
            uris.contains(&"delegate://jobs/{job_id}/artifacts/{+path}".to_string()),
            "{uris:?}"
        );
        client.close().await;
    }
}

#[tokio::test]
async fn bad_arguments_are_tool_errors_naming_the_field() {
    let env = HostEnv::new();
    let client = connect_stdio(&env, Revision::Current).await;
    let e = client
        .tool_error(
            "submit_job",
            json!({"manifest": {"task": "x", "agentType": "robot"}}),
        )
        .await;
    assert!(e.contains("agentType"), "{e}");
    let e = client
        .tool_error(
            "submit_job",
            json!({"manifest": {"task": "x", "agentType": "script", "files": [{"path": "../../etc/passwd", "content": ""}]}}),
        )
        .await;
    assert!(e.contains("files[0].path"), "{e}");
    let e = client.tool_error("get_job_status", json!({})).await;
    assert!(e.contains("job_id"), "{e}");
    let e = client
        .tool_error(
            "get_job_status",
            json!({"job_id": "00000000-0000-4000-8000-000000000000"}),
        )
        .await;
    assert!(e.contains("no job"), "{e}");
    let e = client
        .tool_error("list_jobs", json!({"status": "done"}))
        .await;
    assert!(
        e.contains("unknown job status") && e.contains("provisioning"),
        "{e}"
    );
    let e = client
        .tool_error("get_job_logs", json!({"job_id": "x", "stream": "both"}))
        .await;
    assert!(e.contains("stream"), "{e}");
    // A list of nothing is fine.
    let v = client.ok("list_jobs", json!({})).await;
    assert_eq!(v["jobs"], json!([]));
    tokio::time::timeout(Duration::from_secs(30), client.close())
        .await
        .expect("close");
}
