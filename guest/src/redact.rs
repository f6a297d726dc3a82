//! Secret redaction: every secret value is replaced by `***` in strings and
//! in byte streams, including secrets that arrive split across two reads.
//!
//! The stream redactor keeps back at most `longest secret - 1` bytes, and only
//! when they could still be the start of a secret, so output is delayed as
//! little as possible while no secret ever passes in pieces.

use std::sync::Arc;

use delegate_proto::REDACTED;
use memchr::memmem::Finder;

/// The set of secret values of one job. Cheap to clone.
#[derive(Clone, Default)]
pub struct Secrets {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    finders: Vec<Finder<'static>>,
    longest: usize,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the values themselves.
        write!(f, "Secrets({} values)", self.inner.finders.len())
    }
}

impl Secrets {
    /// Builds the set; empty values are ignored (they would match everywhere).
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut values: Vec<Vec<u8>> = values
            .into_iter()
            .map(|v| v.as_ref().to_vec())
            .filter(|v| !v.is_empty())
            .collect();
        values.sort();
        values.dedup();
        let longest = values.iter().map(Vec::len).max().unwrap_or(0);
        let finders = values
            .iter()
            .map(|v| Finder::new(v.as_slice()).into_owned())
            .collect();
        Secrets {
            inner: Arc::new(Inner { finders, longest }),
        }
    }

    /// The set for a job's secret values: each value, plus its form inside
    /// a JSON string when that differs (an agent that prints JSON, like
    /// Claude Code, escapes quotes, backslashes and control characters).
    pub fn for_job<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut all: Vec<String> = Vec::new();
        for v in values {
            all.push(v.to_string());
            if let Ok(quoted) = serde_json::to_string(v) {
                let inner = &quoted[1..quoted.len() - 1];
                if inner != v {
                    all.push(inner.to_string());
                }
            }
        }
        Secrets::new(all)
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.inner.finders.is_empty()
    }

    /// Redacts a complete string.
    pub fn redact_str(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let mut out = Vec::with_capacity(text.len());
        let pos = self.replace_matches(text.as_bytes(), text.len(), &mut out);
        out.extend_from_slice(&text.as_bytes()[pos..]);
        // Replacing whole UTF-8 sequences with ASCII keeps the text valid.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Redacts every string inside a JSON value, keys included.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => *s = self.redact_str(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact_str(&k), v);
                }
            }
            _ => {}
        }
    }

    /// A redactor for one byte stream.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            secrets: self.clone(),
            pending: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The earliest match starting at or after `from` and before `limit`;
    /// the longest secret wins a tie. Returns (start, len).
    fn next_match(&self, buf: &[u8], from: usize, limit: usize) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for f in &self.inner.finders {
            let Some(i) = f.find(&buf[from..]) else {
                continue;
            };
            let start = from + i;
            if start >= limit {
                continue;
            }
            let len = f.needle().len();
            best = match best {
                Some((s, l)) if s < start || (s == start && l >= len) => Some((s, l)),
                _ => Some((start, len)),
            };
        }
        best
    }

    /// Copies `buf` to `out` with every match that starts before `limit`
    /// replaced; returns the position up to which `buf` was consumed.
    fn replace_matches(&self, buf: &[u8], limit: usize, out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        while let Some((start, len)) = self.next_match(buf, pos, limit) {
            out.extend_from_slice(&buf[pos..start]);
            out.extend_from_slice(REDACTED.as_bytes());
            pos = start + len;
        }
        pos
    }

    /// True when `tail` (the end of the buffer) could be the beginning of a
    /// secret, or a secret that a longer one might extend.
    fn could_start_secret(&self, tail: &[u8]) -> bool {
        self.inner.finders.iter().any(|f| {
            let n = f.needle();
            let k = n.len().min(tail.len());
            n[..k] == tail[..k]
        })
    }
}

/// Redacts one stream incrementally. Feed it with [`push`](Self::push) and
/// call [`finish`](Self::finish) at the end of the stream.
pub struct StreamRedactor {
    secrets: Secrets,
    pending: Vec<u8>,
    scratch: Vec<u8>,
}

impl StreamRedactor {
    /// Appends the redacted form of everything that can be decided so far.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.secrets.is_empty() {
            out.extend_from_slice(input);
            return;
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&self.pending);
        buf.extend_from_slice(input);
        let end = buf.len();
        // A match starting before `limit` has all the bytes it could need,
        // so the longest secret at that position is known.
        let limit = end.saturating_sub(self.secrets.inner.longest - 1);
        let pos = self.secrets.replace_matches(&buf, limit, out);
        let mut hold = pos.max(limit);
        while hold < end && !self.secrets.could_start_secret(&buf[hold..]) {
            hold += 1;
        }
        out.extend_from_slice(&buf[pos..hold]);
        self.pending.clear();
        self.pending.extend_from_slice(&buf[hold..]);
        self.scratch = buf;
    }

    /// Flushes what was held back at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let buf = std::mem::take(&mut self.pending);
        let pos = self.secrets.replace_matches(&buf, buf.len(), out);
        out.extend_from_slice(&buf[pos..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_all(secrets: &Secrets, pieces: &[&[u8]]) -> Vec<u8> {
        let mut r = secrets.stream();
        let mut out = Vec::new();
        for p in pieces {
            r.push(p, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn redacts_strings() {
        let s = Secrets::new(["hunter2", "abc"]);
        assert_eq!(s.redact_str("pw=hunter2 and abc!"), "pw=*** and ***!");
        assert_eq!(s.redact_str("nothing"), "nothing");
        assert_eq!(Secrets::new([""]).redact_str("x"), "x");
    }

    #[test]
    fn longest_secret_wins_at_the_same_position() {
        let s = Secrets::new(["abc", "abcdef"]);
        assert_eq!(s.redact_str("xabcdefy"), "x***y");
        assert_eq!(stream_all(&s, &[b"xabc", b"defy"]), b"x***y");
    }

    #[test]
    fn secrets_split_across_every_boundary_are_redacted() {
        let s = Secrets::new(["s3cr3t-value", "tok"]);
        let text = b"a s3cr3t-value b tok c s3cr3t-values3cr3t-value tokt";
        let expected = s.redact_str(std::str::from_utf8(text).unwrap());
        for cut in 0..=text.len() {
            let got = stream_all(&s, &[&text[..cut], &text[cut..]]);
            assert_eq!(String::from_utf8(got).unwrap(), expected, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(stream_all(&s, &bytewise), expected.as_bytes());
    }

    #[test]
    fn only_possible_prefixes_are_held_back() {
        let s = Secrets::new(["secret"]);
        let mut r = s.stream();
        let mut out = Vec::new();
        r.push(b"hello world\n", &mut out);
        assert_eq!(out, b"hello world\n");
        out.clear();
        r.push(b"now sec", &mut out);
        assert_eq!(out, b"now ");
        out.clear();
        r.push(b"ond", &mut out);
        assert_eq!(out, b"second");
        out.clear();
        r.finish(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn binary_data_passes_unchanged() {
        let s = Secrets::new([b"\xff\x00k".as_slice()]);
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        assert_eq!(stream_all(&s, &[&data[..100], &data[100..]]), data);
        assert_eq!(stream_all(&s, &[b"a\xff", b"\x00kb"]), b"a***b");
    }

    #[test]
    fn json_strings_and_keys_are_redacted() {
        let s = Secrets::new(["pw"]);
        let mut v = serde_json::json!({"pw": ["a pw", 1, {"k": "pw"}]});
        s.redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"***": ["a ***", 1, {"k": "***"}]}));
    }

    #[test]
    fn json_escaped_forms_are_secret_too() {
        let s = Secrets::for_job(["a\"b\\c", "plain"]);
        assert_eq!(
            s.redact_str(r#"{"k":"a\"b\\c","p":"plain"}"#),
            r#"{"k":"***","p":"***"}"#
        );
        assert_eq!(s.redact_str("raw a\"b\\c"), "raw ***");
    }

    #[test]
    fn debug_hides_values() {
        assert_eq!(format!("{:?}", Secrets::new(["x"])), "Secrets(1 values)");
    }
}
