//! Every tool's published input and output schema, checked by a strict
//! JSON Schema validator (the `jsonschema` crate) under the dialect the MCP
//! specification names for schemas without `$schema`: draft 2020-12.
//!
//! Strict clients check more than the meta-schema: a `default`, an `enum`
//! member or a `const` that its own schema refuses (`"default": null` on a
//! string enum, say) makes them reject the whole tool list. So each of those
//! is validated against the schema it sits in, and example arguments are
//! validated against each input schema, both ones a client may send and
//! ones the server refuses.

use delegate_host::mcp::tools::{self, name};
use jsonschema::Validator;
use serde_json::{Map, Value, json};

/// The schemas of one tool, as clients see them.
fn schemas() -> Vec<(String, &'static str, Value)> {
    let mut out = Vec::new();
    for tool in tools::all().iter() {
        out.push((
            tool.name.to_string(),
            "input",
            Value::Object(tool.input_schema.as_ref().clone()),
        ));
        let output = tool.output_schema.as_ref().expect("every tool has one");
        out.push((
            tool.name.to_string(),
            "output",
            Value::Object(output.as_ref().clone()),
        ));
    }
    out
}

fn strict(schema: &Value) -> Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
}

/// The subschema with the root's `$defs`, so `$ref`s inside it resolve.
fn standalone(sub: &Map<String, Value>, root: &Value) -> Value {
    let mut sub = sub.clone();
    for key in ["$defs", "definitions"] {
        if let Some(defs) = root.get(key) {
            sub.insert(key.into(), defs.clone());
        }
    }
    Value::Object(sub)
}

/// Every `default`, `enum` member and `const` in `value`, checked against
/// the schema that declares it; returns what failed.
fn self_inconsistent(value: &Value, root: &Value, at: &str, bad: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            let mut without = object.clone();
            let default = without.remove("default");
            let members = without.remove("enum");
            let constant = without.remove("const");
            let schema = strict(&standalone(&without, root));
            if let Some(d) = default
                && !schema.is_valid(&d)
            {
                bad.push(format!("{at}: default {d} does not match its schema"));
            }
            for m in members
                .iter()
                .flat_map(|m| m.as_array().into_iter().flatten())
            {
                if !schema.is_valid(m) {
                    bad.push(format!("{at}: enum member {m} does not match its schema"));
                }
            }
            if let Some(c) = constant
                && !schema.is_valid(&c)
            {
                bad.push(format!("{at}: const {c} does not match its schema"));
            }
            for (key, child) in object {
                // `properties` and `$defs` hold schemas by name; the names
                // themselves are not schemas.
                if matches!(key.as_str(), "properties" | "$defs" | "definitions")
                    && let Value::Object(named) = child
                {
                    for (n, s) in named {
                        self_inconsistent(s, root, &format!("{at}/{key}/{n}"), bad);
                    }
                } else if !matches!(key.as_str(), "default" | "enum" | "const" | "examples") {
                    self_inconsistent(child, root, &format!("{at}/{key}"), bad);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                self_inconsistent(item, root, &format!("{at}/{i}"), bad);
            }
        }
        _ => {}
    }
}

#[test]
fn every_schema_is_valid_draft_2020_12() {
    for (tool, which, schema) in schemas() {
        if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
            panic!("{tool} {which} schema breaks the 2020-12 meta-schema: {e}");
        }
        strict(&schema);
    }
}

#[test]
fn defaults_enums_and_consts_match_their_own_schemas() {
    let mut bad = Vec::new();
    for (tool, which, schema) in schemas() {
        self_inconsistent(&schema, &schema, &format!("{tool} {which}"), &mut bad);
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn no_string_enum_declares_a_null_default() {
    // The reported case, kept explicit: `list_jobs.status` and
    // `get_job_logs.stream` once said `"default": null`.
    for (tool, which, schema) in schemas() {
        let text = serde_json::to_string(&schema).unwrap();
        assert!(!text.contains("\"default\":null"), "{tool} {which}: {text}");
    }
}

fn input(tool: &str) -> Validator {
    let tool = tools::get(tool).expect("tool exists");
    strict(&Value::Object(tool.input_schema.as_ref().clone()))
}

#[test]
fn example_arguments_are_judged_as_the_server_judges_them() {
    let manifest = json!({
        "task": "echo hi",
        "agentType": "script",
        "resources": {"cpu": 1, "memory": "512M", "disk": "2G"},
        "timeout": 60,
        "statusMode": "streaming",
        "artifacts": ["out/**"]
    });
    let cases: Vec<(&str, Value, bool)> = vec![
        (name::SUBMIT_JOB, json!({"manifest": manifest}), true),
        (name::SUBMIT_JOB, json!({}), false),
        (name::GET_JOB_STATUS, json!({"job_id": "0b6c"}), true),
        (name::GET_JOB_STATUS, json!({"job_id": 7}), false),
        (
            name::GET_JOB_RESULT,
            json!({"job_id": "x", "extra": 1}),
            false,
        ),
        (name::CANCEL_JOB, json!({"job_id": "x"}), true),
        (name::LIST_JOBS, json!({}), true),
        (
            name::LIST_JOBS,
            json!({"status": "running", "limit": 1000}),
            true,
        ),
        (
            name::LIST_JOBS,
            json!({"cursor": "c12", "limit": null}),
            true,
        ),
        (name::LIST_JOBS, json!({"status": "done"}), false),
        (name::LIST_JOBS, json!({"limit": 0}), false),
        (name::LIST_JOBS, json!({"limit": 1001}), false),
        (
            name::WAIT_FOR_JOB,
            json!({"job_id": "x", "timeout_seconds": 30}),
            true,
        ),
        (
            name::WAIT_FOR_JOB,
            json!({"job_id": "x", "timeout_seconds": -1}),
            false,
        ),
        (name::GET_JOB_LOGS, json!({"job_id": "x"}), true),
        (
            name::GET_JOB_LOGS,
            json!({"job_id": "x", "stream": "stderr", "cursor": 10, "max_bytes": 1024}),
            true,
        ),
        (
            name::GET_JOB_LOGS,
            json!({"job_id": "x", "stream": "both"}),
            false,
        ),
        (
            name::GET_JOB_LOGS,
            json!({"job_id": "x", "max_bytes": 0}),
            false,
        ),
    ];
    for (tool, args, valid) in cases {
        let errors: Vec<String> = input(tool)
            .iter_errors(&args)
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.is_empty(), valid, "{tool} {args}: {errors:?}");
    }
}
