//! Reads Claude Code's `--output-format stream-json` output: one JSON object
//! per line, `system` (init), `assistant` (text and tool uses), `user` (tool
//! results) and finally `result`. Assistant turns and tool uses become
//! progress; the result event becomes the job's [`AgentResult`]. Lines that
//! are not JSON are ignored, so banners and warnings cannot break a run.

use delegate_proto::AgentResult;
use serde_json::Value;

/// Longest line kept; a longer one is skipped (memory stays bounded).
const MAX_LINE: usize = 16 << 20;
/// Longest text quoted in a progress message.
const MAX_QUOTE: usize = 120;

/// A progress update derived from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Percent done, when `maxTurns` gives a scale.
    pub percent: Option<f64>,
    /// What happened, for people.
    pub message: String,
}

/// Incremental parser over the (redacted) stdout of `claude`.
#[derive(Debug, Default)]
pub struct StreamJsonParser {
    line: Vec<u8>,
    skipping: bool,
    max_turns: Option<u32>,
    turns: u64,
    last_message_id: Option<String>,
    result: Option<AgentResult>,
}

impl StreamJsonParser {
    /// A parser; `max_turns` scales progress percentages.
    pub fn new(max_turns: Option<u32>) -> Self {
        StreamJsonParser {
            max_turns,
            ..Default::default()
        }
    }

    /// Feeds bytes; complete lines produce updates.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Update>) {
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            let (head, rest) = (&bytes[..i], &bytes[i + 1..]);
            if self.skipping {
                self.skipping = false;
            } else if self.line.is_empty() {
                self.parse_line(head, out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.parse_line(&line, out);
                line.clear();
                self.line = line;
            }
            bytes = rest;
        }
        if self.skipping {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            tracing::warn!("skipping a stream-json line longer than {MAX_LINE} bytes");
            self.line = Vec::new();
            self.skipping = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// Parses a last line that had no newline.
    pub fn finish(&mut self, out: &mut Vec<Update>) {
        let line = std::mem::take(&mut self.line);
        if !self.skipping && !line.is_empty() {
            self.parse_line(&line, out);
        }
    }

    /// The result event, once seen.
    pub fn result(&self) -> Option<&AgentResult> {
        self.result.as_ref()
    }

    /// Takes the result event.
    pub fn take_result(&mut self) -> Option<AgentResult> {
        self.result.take()
    }

    fn parse_line(&mut self, line: &[u8], out: &mut Vec<Update>) {
        let trimmed = line.trim_ascii();
        if !trimmed.starts_with(b"{") {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(trimmed) else {
            return;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("system") => self.system(&v, out),
            Some("assistant") => self.assistant(&v, out),
            Some("result") => self.result_event(&v, out),
            _ => {}
        }
    }

    fn percent(&self) -> Option<f64> {
        self.max_turns
            .filter(|m| *m > 0)
            .map(|m| ((self.turns as f64) * 100.0 / f64::from(m)).min(99.0))
    }

    fn system(&mut self, v: &Value, out: &mut Vec<Update>) {
        match v.get("subtype").and_then(Value::as_str) {
            Some("init") => {
                let model = v
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("default model");
                let tools = v.get("tools").and_then(Value::as_array).map_or(0, Vec::len);
                out.push(Update {
                    percent: self.percent(),
                    message: format!("claude started ({model}, {tools} tools)"),
                });
            }
            Some("api_retry") => out.push(Update {
                percent: self.percent(),
                message: "claude: API error, retrying".into(),
            }),
            _ => {}
        }
    }

    fn assistant(&mut self, v: &Value, out: &mut Vec<Update>) {
        let message = v.get("message");
        // Claude Code prints one line per content block of a message; a new
        // message id is a new turn.
        let id = message
            .and_then(|m| m.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if id.is_none() || id != self.last_message_id {
            self.turns += 1;
            self.last_message_id = id;
        }
        let blocks = message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for block in blocks {
            let text = match block.get("type").and_then(Value::as_str) {
                Some("tool_use") => {
                    let name = block.get("name").and_then(Value::as_str).unwrap_or("?");
                    match block.get("input").and_then(tool_detail) {
                        Some(detail) => format!("tool: {name}: {}", quote(&detail)),
                        None => format!("tool: {name}"),
                    }
                }
                Some("text") => match block.get("text").and_then(Value::as_str) {
                    Some(t) if !t.trim().is_empty() => format!("says: {}", quote(t)),
                    _ => continue,
                },
                _ => continue,
            };
            out.push(Update {
                percent: self.percent(),
                message: format!("turn {}: {text}", self.turns),
            });
        }
    }

    fn result_event(&mut self, v: &Value, out: &mut Vec<Update>) {
        let r = agent_result(v);
        out.push(Update {
            percent: Some(100.0),
            message: format!(
                "claude finished: {} after {} turns{}",
                if r.is_error { "error" } else { "ok" },
                r.num_turns.unwrap_or(self.turns),
                r.total_cost_usd
                    .map(|c| format!(", ${c:.4}"))
                    .unwrap_or_default()
            ),
        });
        self.result = Some(r);
    }
}

/// The result event's fields as the job result carries them.
pub fn agent_result(v: &Value) -> AgentResult {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let present = |k: &str| v.get(k).filter(|x| !x.is_null()).cloned();
    AgentResult {
        result: s("result"),
        // A result that does not say is not trusted as a success.
        is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(true),
        subtype: s("subtype"),
        terminal_reason: s("terminal_reason"),
        num_turns: v.get("num_turns").and_then(Value::as_u64),
        total_cost_usd: v.get("total_cost_usd").and_then(Value::as_f64),
        usage: present("usage"),
        model_usage: present("modelUsage"),
        session_id: s("session_id"),
        permission_denials: present("permission_denials"),
        errors: present("errors"),
        duration_ms: v.get("duration_ms").and_then(Value::as_u64),
    }
}

/// The most telling input of common tools: a command, a path, a pattern.
fn tool_detail(input: &Value) -> Option<String> {
    [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "description",
    ]
    .iter()
    .find_map(|k| input.get(*k).and_then(Value::as_str))
    .map(str::to_string)
}

/// First line, at most [`MAX_QUOTE`] characters.
fn quote(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("");
    let mut q: String = line.chars().take(MAX_QUOTE).collect();
    if q.len() < line.len() || text.trim().lines().nth(1).is_some() {
        q.push('…');
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = concat!(
        r#"{"type":"system","subtype":"init","cwd":"/workspace","session_id":"s-1","tools":["Bash","Read"],"model":"claude-sonnet-4-5","permissionMode":"bypassPermissions","apiKeySource":"ANTHROPIC_API_KEY"}"#,
        "\n",
        r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Let me look.\nMore."}]},"session_id":"s-1"}"#,
        "\n",
        r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"ls -la","description":"List"}}]},"session_id":"s-1"}"#,
        "\n",
        r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_1","type":"tool_result","content":"a\nb","is_error":false}]},"session_id":"s-1"}"#,
        "\n",
        "not json at all\n",
        r#"{"type":"assistant","message":{"id":"msg_2","content":[{"type":"text","text":"Done."}]}}"#,
        "\n",
        r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":1234,"num_turns":2,"result":"Done.","session_id":"s-1","total_cost_usd":0.0123,"usage":{"input_tokens":10,"output_tokens":5},"modelUsage":{"claude-sonnet-4-5":{"inputTokens":10}},"permission_denials":[],"terminal_reason":"completed"}"#,
        "\n"
    );

    #[test]
    fn parses_a_session_across_any_split() {
        let bytes = SESSION.as_bytes();
        for cut in [0, 1, 50, 200, bytes.len() / 2, bytes.len() - 3, bytes.len()] {
            let mut p = StreamJsonParser::new(Some(4));
            let mut out = Vec::new();
            p.push(&bytes[..cut], &mut out);
            p.push(&bytes[cut..], &mut out);
            p.finish(&mut out);
            let messages: Vec<&str> = out.iter().map(|u| u.message.as_str()).collect();
            assert_eq!(
                messages,
                vec![
                    "claude started (claude-sonnet-4-5, 2 tools)",
                    "turn 1: says: Let me look.…",
                    "turn 1: tool: Bash: ls -la",
                    "turn 2: says: Done.",
                    "claude finished: ok after 2 turns, $0.0123",
                ],
                "cut {cut}"
            );
            assert_eq!(out[2].percent, Some(25.0));
            let r = p.result().unwrap();
            assert!(!r.is_error);
            assert_eq!(r.num_turns, Some(2));
            assert_eq!(r.session_id.as_deref(), Some("s-1"));
            assert_eq!(r.terminal_reason.as_deref(), Some("completed"));
            assert_eq!(r.usage.as_ref().unwrap()["output_tokens"], 5);
            assert!(r.model_usage.is_some());
            assert_eq!(r.permission_denials, Some(serde_json::json!([])));
        }
    }

    #[test]
    fn unterminated_last_line_is_parsed_and_missing_is_error_fails_closed() {
        let mut p = StreamJsonParser::new(None);
        let mut out = Vec::new();
        p.push(
            br#"{"type":"result","subtype":"success","result":"x"}"#,
            &mut out,
        );
        assert!(p.result().is_none());
        p.finish(&mut out);
        assert!(p.result().unwrap().is_error);
    }

    #[test]
    fn overlong_lines_are_skipped_without_losing_the_next() {
        let mut p = StreamJsonParser::new(None);
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_LINE / 2 + 1];
        p.push(&big, &mut out);
        p.push(&big, &mut out);
        assert!(p.line.is_empty());
        p.push(
            b"tail\n{\"type\":\"result\",\"is_error\":false}\n",
            &mut out,
        );
        assert_eq!(p.result().map(|r| r.is_error), Some(false));
    }
}
