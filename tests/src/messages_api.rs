//! A stand-in for the Anthropic Messages API on loopback, for the real
//! Claude Code CLI: its first request that offers the file-writing tool
//! gets a `tool_use` of that tool (creating [`FILE`] with [`CONTENT`]), a request carrying a `tool_result` gets the
//! final text and `end_turn`, and any other request (a title, a topic
//! check) a short text. Streaming requests are answered with the Messages
//! API's server-sent events, the others with one JSON message; token
//! counting gets a count. Every request is recorded with its key header.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The tool Claude Code writes files with.
pub const WRITE_TOOL: &str = "Write";
/// The text the final answer carries.
pub const FINAL_TEXT: &str = "The greeting file is written.";

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub uri: String,
    /// The `x-api-key` header, when any.
    pub api_key: Option<String>,
    /// The `authorization` header, when any.
    pub authorization: Option<String>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
    /// What the mock answered with: `tool_use`, `final`, `text` or `count`.
    pub answer: &'static str,
}

/// The running mock.
pub struct MessagesApi {
    /// Its loopback port.
    pub port: u16,
    /// Every request so far.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MessagesApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The file the tool call creates, relative to Claude Code's working
/// directory.
pub const FILE: &str = "GREETING.md";
/// What it writes there.
pub const CONTENT: &str = "hello from the mock Messages API\n";

impl MessagesApi {
    /// Serves on a free loopback port.
    pub async fn start() -> MessagesApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock Messages API");
        let port = listener.local_addr().expect("its address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(handle).with_state(seen.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MessagesApi { port, seen, server }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("mock state").clone()
    }
}

async fn handle(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path();
    let (answer, response) = if path.ends_with("/count_tokens") {
        (
            "count",
            axum::Json(json!({"input_tokens": 12})).into_response(),
        )
    } else if path.ends_with("/v1/messages") {
        let (kind, content, stop) = reply(&body);
        let model = body["model"].as_str().unwrap_or("claude-sonnet-4-5");
        let response = if body["stream"] == true {
            sse(model, &content, stop)
        } else {
            axum::Json(message(model, &content, stop)).into_response()
        };
        (kind, response)
    } else {
        ("none", StatusCode::NOT_FOUND.into_response())
    };
    seen.lock().expect("mock state").push(Seen {
        uri: uri.to_string(),
        api_key: header("x-api-key"),
        authorization: header("authorization"),
        body,
        answer,
    });
    response
}

/// What to answer `body` with: its kind, content blocks and stop reason.
fn reply(body: &Value) -> (&'static str, Vec<Value>, &'static str) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let has_tool_result = messages.iter().any(|m| {
        m["content"]
            .as_array()
            .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"))
    });
    if has_tool_result {
        let text = json!({"type": "text", "text": FINAL_TEXT});
        return ("final", vec![text], "end_turn");
    }
    let offers_write = body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|tool| tool["name"] == WRITE_TOOL));
    if offers_write {
        let input = json!({
            "file_path": format!("{}/{FILE}", working_dir(body)),
            "content": CONTENT,
        });
        let call = json!({"type": "tool_use", "id": "toolu_mock_write_01", "name": WRITE_TOOL, "input": input});
        return ("tool_use", vec![call], "tool_use");
    }
    let text = json!({"type": "text", "text": "Greeting file"});
    ("text", vec![text], "end_turn")
}

/// The working directory Claude Code states in its system prompt
/// (`Working directory: /workspace`); `/workspace` when it says none.
fn working_dir(body: &Value) -> String {
    let system = match &body["system"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    system
        .lines()
        .find_map(|l| l.trim().strip_prefix("Working directory: "))
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|| "/workspace".into())
}

fn usage() -> Value {
    json!({"input_tokens": 12, "output_tokens": 8, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
}

/// A whole (non-streaming) message.
fn message(model: &str, content: &[Value], stop: &str) -> Value {
    json!({
        "id": "msg_mock_01", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage(),
    })
}

/// The same message as the Messages API streams it.
fn sse(model: &str, content: &[Value], stop: &str) -> Response {
    let mut events = Vec::new();
    let mut start = message(model, &[], "");
    start["stop_reason"] = Value::Null;
    events.push(json!({"type": "message_start", "message": start}));
    for (index, block) in content.iter().enumerate() {
        let (empty, delta) = if block["type"] == "tool_use" {
            let mut empty = block.clone();
            empty["input"] = json!({});
            let partial = block["input"].to_string();
            (
                empty,
                json!({"type": "input_json_delta", "partial_json": partial}),
            )
        } else {
            (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": block["text"]}),
            )
        };
        events.push(json!({"type": "content_block_start", "index": index, "content_block": empty}));
        events.push(json!({"type": "content_block_delta", "index": index, "delta": delta}));
        events.push(json!({"type": "content_block_stop", "index": index}));
    }
    events.push(json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": 8},
    }));
    events.push(json!({"type": "message_stop"}));
    let text: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect();
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        text,
    )
        .into_response()
}
