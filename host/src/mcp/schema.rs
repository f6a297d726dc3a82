//! JSON Schemas for tool inputs and outputs, cleaned up for MCP clients.
//!
//! schemars describes Rust integers with `format: "uint32"`, `"int64"`,
//! `"double"` and so on. Those are not JSON Schema formats; several clients
//! warn about them (`uint8` especially) and strict validators reject them.
//! Every schema the server publishes goes through [`clean`], which drops
//! those formats and keeps the meaningful ones (`date-time`, `uri`, ...).
//!
//! schemars also writes `"default": null` for a `#[serde(default)]` option
//! whose schema is given by hand (a string enum, say); a default its own
//! schema refuses makes strict validators reject the whole tool list, so
//! [`clean`] drops a null default wherever `null` is not an allowed type.

use std::sync::Arc;

use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde_json::Value;

/// The `format` values schemars emits for Rust number types.
const RUST_NUMBER_FORMATS: &[&str] = &[
    "int8", "int16", "int32", "int64", "int128", "int", "uint8", "uint16", "uint32", "uint64",
    "uint128", "uint", "float", "double",
];

/// The input schema for a tool taking `T` (root type `object`).
pub fn input<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    // A schema failure here is a programming error in a type of this module,
    // caught by the unit tests below, never by a client's input.
    let raw = rmcp::handler::server::tool::schema_for_input::<T>()
        .unwrap_or_else(|e| panic!("input schema of {}: {e}", std::any::type_name::<T>()));
    Arc::new(clean(raw.as_ref().clone()))
}

/// The output schema for a tool answering `T` (what `Serialize` writes).
pub fn output<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    let raw = rmcp::handler::server::tool::schema_for_output::<T>();
    Arc::new(clean(raw.as_ref().clone()))
}

/// Removes schemars' Rust number formats, and null defaults that their
/// schema refuses, everywhere in the schema.
pub fn clean(mut schema: JsonObject) -> JsonObject {
    strip_object(&mut schema);
    schema
}

fn strip_object(object: &mut JsonObject) {
    let is_rust_format = object
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| RUST_NUMBER_FORMATS.contains(&f));
    if is_rust_format {
        object.remove("format");
    }
    if object.get("default") == Some(&Value::Null) && !allows_null(object) {
        object.remove("default");
    }
    for value in object.values_mut() {
        strip_value(value);
    }
}

/// Whether a schema's `type` admits `null` (a schema without `type` is
/// left alone: it may allow anything).
fn allows_null(object: &JsonObject) -> bool {
    match object.get("type") {
        None => true,
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        Some(_) => false,
    }
}

fn strip_value(value: &mut Value) {
    match value {
        Value::Object(object) => strip_object(object),
        Value::Array(items) => items.iter_mut().for_each(strip_value),
        _ => {}
    }
}

/// Every `format` value anywhere in a schema, for tests and checks.
pub fn formats(schema: &JsonObject) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(f)) = object.get("format") {
                    out.push(f.clone());
                }
                object.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&Value::Object(schema.clone()), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Numbers {
        small: u8,
        count: u32,
        big: Option<u64>,
        signed: i32,
        ratio: f64,
        nested: Vec<Inner>,
    }

    #[derive(JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        size: u16,
        /// A date.
        #[schemars(extend("format" = "date-time"))]
        when: String,
    }

    #[test]
    fn rust_number_formats_are_removed_and_others_kept() {
        let schema = input::<Numbers>();
        assert_eq!(formats(&schema), vec!["date-time".to_string()]);
        let text = serde_json::to_string(schema.as_ref()).unwrap();
        assert!(!text.contains("uint"), "{text}");
        // The bounds schemars derives from the types stay.
        assert!(text.contains("\"minimum\":0"), "{text}");
    }

    #[test]
    fn null_defaults_go_only_where_null_is_refused() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "state": {"type": "string", "enum": ["a", "b"], "default": null},
                "maybe": {"type": ["integer", "null"], "default": null},
                "kind": {"type": "string", "default": "a"}
            }
        });
        let cleaned = clean(schema.as_object().unwrap().clone());
        let props = &cleaned["properties"];
        assert!(props["state"].get("default").is_none(), "{props}");
        assert_eq!(props["maybe"]["default"], Value::Null);
        assert_eq!(props["kind"]["default"], "a");
    }

    #[test]
    fn input_schema_root_is_object() {
        let schema = input::<Numbers>();
        assert_eq!(schema.get("type"), Some(&Value::String("object".into())));
    }
}
