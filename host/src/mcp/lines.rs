//! MCP's stdio framing (one JSON-RPC message per line) with an answer for
//! every line a client sends.
//!
//! rmcp's own line transport drops an over-long line and ignores a line that
//! is not JSON, both silently: a client that sent either waits for an answer
//! forever. Here every refused line gets a JSON-RPC error instead: `-32700`
//! (parse error) for text that is not JSON, `-32600` (invalid request) for
//! JSON that is no JSON-RPC message and for a message over
//! [`MAX_MESSAGE_BYTES`], answered with the request's id when the line shows
//! one, so the client's pending call ends. Notifications (no id) that rmcp
//! does not know are still ignored, as the protocol wants.
//!
//! Reading is bounded: a line is never buffered past the cap, the rest of an
//! oversized line is skipped as it arrives, and only its first bytes are
//! kept to find the id.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use super::limits::MAX_MESSAGE_BYTES;

/// How much of an oversized line is kept to look for its id.
const ID_SCAN_BYTES: usize = 64 * 1024;

/// JSON-RPC's code for text that is not JSON.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for JSON that is not a valid request.
const INVALID_REQUEST: i64 = -32600;

/// A line-framed transport over a reader and a writer (stdin and stdout).
pub struct LineTransport<R, W> {
    read: BufReader<R>,
    write: Arc<Mutex<W>>,
    /// The line being read; it survives a cancelled `receive`, which rmcp
    /// polls inside a `select!`.
    line: Vec<u8>,
    /// Set while the rest of an oversized line is being skipped.
    oversized: Option<Oversized>,
    max: usize,
}

/// An oversized line being skipped: its length so far and its first bytes.
struct Oversized {
    len: usize,
    head: Vec<u8>,
}

/// What one step of reading produced.
enum Read {
    Line,
    Oversized(Oversized),
    Eof,
}

impl<R, W> LineTransport<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    /// A transport with the documented message cap.
    pub fn new(read: R, write: W) -> Self {
        Self::with_max(read, write, MAX_MESSAGE_BYTES)
    }

    /// The same with another cap (tests).
    pub fn with_max(read: R, write: W, max: usize) -> Self {
        LineTransport {
            read: BufReader::with_capacity(64 * 1024, read),
            write: Arc::new(Mutex::new(write)),
            line: Vec::new(),
            oversized: None,
            max,
        }
    }

    /// Reads up to the next newline without buffering more than `max`
    /// bytes. Cancel-safe: progress is kept in `self`, and each chunk taken
    /// from the reader is recorded before the next await.
    async fn read_line(&mut self) -> std::io::Result<Read> {
        loop {
            let available = self.read.fill_buf().await?;
            if available.is_empty() {
                return Ok(Read::Eof);
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            let chunk = &available[..take];
            if let Some(skip) = &mut self.oversized {
                skip.len = skip.len.saturating_add(take);
                let room = ID_SCAN_BYTES.saturating_sub(skip.head.len());
                skip.head.extend_from_slice(&chunk[..room.min(take)]);
            } else if self.line.len() + take > self.max + 1 {
                // +1: the newline does not count against the cap.
                let len = self.line.len() + take;
                let mut head = std::mem::take(&mut self.line);
                head.truncate(ID_SCAN_BYTES);
                let room = ID_SCAN_BYTES.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..room.min(take)]);
                self.oversized = Some(Oversized { len, head });
            } else {
                self.line.extend_from_slice(chunk);
            }
            self.read.consume(take);
            if newline.is_some() {
                return Ok(match self.oversized.take() {
                    Some(skip) => Read::Oversized(skip),
                    None => Read::Line,
                });
            }
        }
    }

    /// Writes one error answer. It runs as a task of its own so that a
    /// `receive` cancelled by rmcp's `select!` never leaves half a line on
    /// the wire.
    fn answer_error(&self, id: Value, code: i64, message: String) {
        tracing::warn!(code, %message, "MCP request refused");
        let answer = json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": message},
        });
        let write = self.write.clone();
        tokio::spawn(async move {
            let mut bytes = answer.to_string().into_bytes();
            bytes.push(b'\n');
            let mut w = write.lock().await;
            if let Err(e) = async {
                w.write_all(&bytes).await?;
                w.flush().await
            }
            .await
            {
                tracing::debug!(error = %e, "cannot answer a refused MCP request");
            }
        });
    }

    /// Decides what to do with one complete line: a message for rmcp, or
    /// an error answer (or nothing, for an unknown notification).
    fn parse(&self, line: &[u8]) -> Option<RxJsonRpcMessage<RoleServer>> {
        let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
        match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
            Ok(message) => return Some(message),
            Err(e) if e.is_syntax() || e.is_eof() => {
                self.answer_error(Value::Null, PARSE_ERROR, format!("parse error: {e}"));
                return None;
            }
            Err(_) => {}
        }
        // Valid JSON, but not a message rmcp knows.
        let value: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        let id = value
            .get("id")
            .filter(|id| id.is_number() || id.is_string());
        match (id, value.get("method").and_then(Value::as_str)) {
            // A notification gets no answer, whatever it is.
            (None, Some(method)) => {
                tracing::debug!(method, "ignoring a notification this server does not know");
            }
            (id, method) => {
                let what = match (value.is_object(), method) {
                    (false, _) => "a JSON-RPC message must be a JSON object".to_string(),
                    (true, None) => "the message has no \"method\"".to_string(),
                    (true, Some(m)) => format!("{m:?} with parameters this server cannot read"),
                };
                self.answer_error(
                    id.cloned().unwrap_or(Value::Null),
                    INVALID_REQUEST,
                    format!("invalid request: {what}"),
                );
            }
        }
        None
    }
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let write = self.write.clone();
        async move {
            let mut bytes = serde_json::to_vec(&item)?;
            bytes.push(b'\n');
            let mut w = write.lock().await;
            w.write_all(&bytes).await?;
            w.flush().await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            match self.read_line().await {
                Ok(Read::Line) => {}
                Ok(Read::Oversized(skip)) => {
                    let id = id_in_prefix(&skip.head).unwrap_or(Value::Null);
                    self.answer_error(
                        id,
                        INVALID_REQUEST,
                        format!(
                            "the message is {} bytes; one message may be at most {} bytes \
                             (a manifest at most {})",
                            skip.len.saturating_sub(1),
                            self.max,
                            delegate_proto::manifest::MAX_MANIFEST_BYTES,
                        ),
                    );
                    continue;
                }
                // Anything unterminated at EOF is an incomplete message.
                Ok(Read::Eof) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the MCP stream");
                    return None;
                }
            }
            let line = std::mem::take(&mut self.line);
            let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
            let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
            let parsed = if trimmed.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                self.parse(trimmed)
            };
            // Keep the allocation for the next line.
            self.line = line;
            self.line.clear();
            if let Some(message) = parsed {
                return Some(message);
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.write.lock().await.shutdown().await
    }
}

/// The top-level `"id"` of a JSON object whose text may be cut off: a
/// number or a string that appears whole in `head`.
fn id_in_prefix(head: &[u8]) -> Option<Value> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let end = string_end(head, i)?;
                if depth == 1 && &head[i..=end] == b"\"id\"" {
                    return value_after_colon(head, end + 1);
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index of the quote that closes the string opening at `start`.
fn string_end(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The number or string after `: ` at `from`, if it is whole.
fn value_after_colon(s: &[u8], from: usize) -> Option<Value> {
    let rest = &s[from..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let rest = &rest[colon + 1..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &rest[start..];
    let end = if rest.first() == Some(&b'"') {
        string_end(rest, 0)? + 1
    } else {
        // A number ends at a delimiter; one cut off by the prefix's end is
        // not trusted.
        rest.iter()
            .position(|b| matches!(b, b',' | b'}' | b' ' | b'\n'))?
    };
    serde_json::from_slice::<Value>(&rest[..end])
        .ok()
        .filter(|v| v.is_number() || v.is_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_top_level_id_only() {
        let cases: [(&[u8], Option<Value>); 7] = [
            (
                br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"#,
                Some(json!(7)),
            ),
            (
                br#"{"method":"x","params":{"id":1},"id" : "abc","#,
                Some(json!("abc")),
            ),
            (br#"{"method":"x","params":{"id":1,"a":"#, None),
            (br#"{"note":"\"id\":3","id":4}"#, Some(json!(4))),
            (br#"{"id":12"#, None),
            (br#"{"id":null,"#, None),
            (br#"[{"id":1}]"#, None),
        ];
        for (head, want) in cases {
            assert_eq!(
                id_in_prefix(head),
                want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
