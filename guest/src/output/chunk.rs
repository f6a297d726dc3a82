//! Turns a redacted byte stream into [`LogChunk`]s with byte offsets.
//!
//! A read can end in the middle of a multi-byte UTF-8 character; such an
//! incomplete ending is carried into the next chunk so that text stays text
//! (a chunk that is not valid UTF-8 would travel as base64).

use delegate_proto::{LogChunk, LogStream};

/// Assigns offsets to consecutive pieces of one stream.
#[derive(Debug)]
pub struct Chunker {
    stream: LogStream,
    offset: u64,
    carry: Vec<u8>,
}

impl Chunker {
    /// A chunker for `stream`, starting at offset 0.
    pub fn new(stream: LogStream) -> Self {
        Chunker {
            stream,
            offset: 0,
            carry: Vec::new(),
        }
    }

    /// The chunk for `bytes`, or `None` when everything was carried over.
    pub fn push(&mut self, bytes: &[u8]) -> Option<LogChunk> {
        if self.carry.is_empty() {
            let keep = incomplete_utf8_suffix(bytes);
            let (now, later) = bytes.split_at(bytes.len() - keep);
            self.carry.extend_from_slice(later);
            return self.emit(now);
        }
        let mut joined = std::mem::take(&mut self.carry);
        joined.extend_from_slice(bytes);
        let keep = incomplete_utf8_suffix(&joined);
        self.carry = joined.split_off(joined.len() - keep);
        self.emit(&joined)
    }

    /// The last chunk at the end of the stream, if anything was carried.
    pub fn finish(&mut self) -> Option<LogChunk> {
        let rest = std::mem::take(&mut self.carry);
        self.emit(&rest)
    }

    fn emit(&mut self, bytes: &[u8]) -> Option<LogChunk> {
        if bytes.is_empty() {
            return None;
        }
        let chunk = LogChunk::new(self.stream, self.offset, bytes);
        self.offset += bytes.len() as u64;
        Some(chunk)
    }
}

/// How many bytes at the end are the unfinished start of a UTF-8 sequence
/// (0 to 3). Binary data may lose nothing: carried bytes are sent later.
fn incomplete_utf8_suffix(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(3) {
        let lead = bytes[n - back];
        if lead & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let need = match lead {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        let unfinished =
            matches!(std::str::from_utf8(&bytes[n - back..]), Err(e) if e.error_len().is_none());
        return if need > back && unfinished { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_contiguous_and_utf8_is_not_split() {
        let text = "aé€😀z€".as_bytes();
        for cut in 0..=text.len() {
            let mut c = Chunker::new(LogStream::Stdout);
            let mut chunks = Vec::new();
            chunks.extend(c.push(&text[..cut]));
            chunks.extend(c.push(&text[cut..]));
            chunks.extend(c.finish());
            let mut offset = 0;
            let mut all = Vec::new();
            for ch in &chunks {
                assert_eq!(ch.offset, offset);
                assert!(ch.text.is_some(), "cut {cut}: {ch:?}");
                let b = ch.bytes().unwrap();
                offset += b.len() as u64;
                all.extend(b);
            }
            assert_eq!(all, text);
        }
    }

    #[test]
    fn binary_goes_as_base64() {
        let mut c = Chunker::new(LogStream::Stderr);
        let ch = c.push(b"\xff\xfe\x00").unwrap();
        assert!(ch.base64.is_some());
        assert_eq!(ch.bytes().unwrap(), b"\xff\xfe\x00");
        let ch = c.push(b"ok").unwrap();
        assert_eq!(ch.offset, 3);
        assert!(c.finish().is_none());
    }

    #[test]
    fn a_lone_truncated_sequence_is_flushed_at_the_end() {
        let mut c = Chunker::new(LogStream::Stdout);
        assert!(c.push(b"\xe2\x82").is_none());
        let ch = c.finish().unwrap();
        assert_eq!(ch.bytes().unwrap(), b"\xe2\x82");
        assert_eq!(ch.offset, 0);
    }
}
