//! Every request line a stdio client sends gets an answer: a line that is
//! not JSON gets -32700, JSON that is no request and a message over the cap
//! get -32600 with the request's id, and the session goes on. Over HTTP a
//! body over the cap is refused with 413, naming the cap.

use std::process::Stdio;
use std::time::Duration;

use delegate_tests::mcp::{HostEnv, HttpHost};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const LIMIT: Duration = Duration::from_secs(60);
/// `mcp::limits::MAX_MESSAGE_BYTES`: the manifest cap (32 MiB) plus 1 MiB.
const MAX_MESSAGE_BYTES: usize = (32 << 20) + (1 << 20);

struct Raw {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Raw {
    async fn start(env: &HostEnv) -> Raw {
        let mut child = env
            .command(&["serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn delegate-host serve");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut raw = Raw {
            _child: child,
            stdin,
            stdout,
        };
        raw.send_json(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}
        }))
        .await;
        let init = raw.answer().await;
        assert_eq!(init["id"], 0, "{init}");
        raw.send_json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        raw
    }

    async fn send_line(&mut self, line: &[u8]) {
        self.stdin.write_all(line).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    async fn send_json(&mut self, v: &Value) {
        self.send_line(v.to_string().as_bytes()).await;
    }

    async fn answer(&mut self) -> Value {
        let line = tokio::time::timeout(LIMIT, self.stdout.next_line())
            .await
            .expect("an answer in time")
            .unwrap()
            .expect("the server is still there");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    async fn list_tools(&mut self, id: u64) {
        self.send_json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}))
            .await;
        let answer = self.answer().await;
        assert_eq!(answer["id"], id, "{answer}");
        assert!(answer["result"]["tools"].is_array(), "{answer}");
    }
}

#[tokio::test]
async fn every_refused_stdio_line_gets_an_answer_and_the_session_goes_on() {
    let env = HostEnv::new();
    let mut raw = Raw::start(&env).await;

    raw.send_line(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ")
        .await;
    let a = raw.answer().await;
    assert_eq!(a["error"]["code"], -32700, "{a}");
    assert_eq!(a["id"], Value::Null, "{a}");
    raw.list_tools(2).await;

    raw.send_json(&json!({"jsonrpc": "2.0", "id": "three", "params": {}}))
        .await;
    let a = raw.answer().await;
    assert_eq!(a["error"]["code"], -32600, "{a}");
    assert_eq!(a["id"], "three", "{a}");
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no \"method\""),
        "{a}"
    );

    raw.send_json(&json!([1, 2, 3])).await;
    let a = raw.answer().await;
    assert_eq!(a["error"]["code"], -32600, "{a}");

    // An unknown notification is not answered: the next answer is the
    // next request's.
    raw.send_json(
        &json!({"jsonrpc": "2.0", "method": "notifications/whatever", "params": {"x": 1}}),
    )
    .await;
    raw.list_tools(4).await;

    // A tools/call one byte over the cap: refused with its id, and the
    // cap named; then the session still works.
    let prefix = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "submit_job", "arguments": {"manifest": {"task": "PAD"}}}})
    .to_string();
    let pad = MAX_MESSAGE_BYTES + 1 - (prefix.len() - 3);
    let line = prefix.replace("PAD", &"x".repeat(pad));
    assert_eq!(line.len(), MAX_MESSAGE_BYTES + 1);
    raw.send_line(line.as_bytes()).await;
    let a = raw.answer().await;
    assert_eq!(a["id"], 5, "{a}");
    assert_eq!(a["error"]["code"], -32600, "{a}");
    let message = a["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("is {} bytes", MAX_MESSAGE_BYTES + 1))
            && message.contains(&format!("at most {MAX_MESSAGE_BYTES} bytes")),
        "{message}"
    );
    raw.list_tools(6).await;
}

#[tokio::test]
async fn a_manifest_at_the_cap_fits_in_one_stdio_message() {
    let env = HostEnv::new();
    let mut raw = Raw::start(&env).await;
    // A manifest just under its own cap: the message is accepted and the
    // manifest is judged by its own rules (here: a task that is too long),
    // not dropped by the transport.
    let task = "y".repeat((32 << 20) - 100);
    raw.send_json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "submit_job", "arguments": {"manifest": {"task": task, "agentType": "script"}}}}))
        .await;
    let a = raw.answer().await;
    assert_eq!(a["id"], 9, "{a}");
    let text = a.to_string();
    assert!(
        text.contains("task"),
        "the manifest's own rule answered: {}",
        &text[..text.len().min(400)]
    );
}

#[tokio::test]
async fn an_http_body_over_the_cap_is_refused_with_413() {
    let mut env = HostEnv::new();
    let host = HttpHost::start(&mut env).await;
    // Only the head is sent: the server answers from the declared length
    // and closes, so a client still sending 33 MiB would see EPIPE first.
    let mut conn = tokio::net::TcpStream::connect(host.authority())
        .await
        .unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {}\r\n\r\n",
        host.authority(),
        host.token,
        MAX_MESSAGE_BYTES + 1
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        LIMIT,
        tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut answer),
    )
    .await
    .expect("an answer in time")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(&format!("at most {MAX_MESSAGE_BYTES} bytes")),
        "{answer}"
    );
    host.stop().await;
}
