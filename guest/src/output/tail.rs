//! A bounded tail of one output stream: the last N bytes and the total count.

use std::collections::VecDeque;

use delegate_proto::OutputTail;

/// Keeps the last `capacity` bytes written to it.
#[derive(Debug)]
pub struct Tail {
    buf: VecDeque<u8>,
    capacity: usize,
    total: u64,
}

impl Tail {
    /// A tail that keeps at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Tail {
            buf: VecDeque::with_capacity(capacity.min(1 << 20)),
            capacity,
            total: 0,
        }
    }

    /// Records more output.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.capacity == 0 {
            return;
        }
        let keep = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let overflow = (self.buf.len() + keep.len()).saturating_sub(self.capacity);
        self.buf.drain(..overflow);
        self.buf.extend(keep);
    }

    /// The most bytes kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Starts over from the last bytes of `total` bytes seen elsewhere
    /// (read back from the log file).
    pub fn seed(&mut self, last: &[u8], total: u64) {
        self.buf.clear();
        self.buf
            .extend(&last[last.len().saturating_sub(self.capacity)..]);
        self.total = total;
    }

    /// Bytes seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The tail as the result carries it. When earlier output was cut, a
    /// UTF-8 sequence cut in half at the start is dropped rather than shown
    /// as a replacement character.
    pub fn to_output(&self) -> OutputTail {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(self.buf.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let truncated = self.total > self.buf.len() as u64;
        let mut start = 0;
        if truncated {
            while start < bytes.len().min(3) && (bytes[start] & 0xC0) == 0x80 {
                start += 1;
            }
        }
        OutputTail {
            text: String::from_utf8_lossy(&bytes[start..]).into_owned(),
            truncated,
            total_bytes: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes() {
        let mut t = Tail::new(5);
        t.push(b"abc");
        assert_eq!(t.to_output().text, "abc");
        assert!(!t.to_output().truncated);
        t.push(b"defg");
        let out = t.to_output();
        assert_eq!(out.text, "cdefg");
        assert!(out.truncated);
        assert_eq!(out.total_bytes, 7);
        t.push(b"0123456789");
        assert_eq!(t.to_output().text, "56789");
        assert_eq!(t.total(), 17);
    }

    #[test]
    fn cut_utf8_at_the_start_is_dropped_and_invalid_bytes_are_replaced() {
        let mut t = Tail::new(4);
        t.push("xé€".as_bytes()); // 1 + 2 + 3 bytes; the tail starts inside 'é'
        assert_eq!(t.to_output().text, "€");
        let mut t = Tail::new(8);
        t.push(b"a\xffb");
        assert_eq!(t.to_output().text, "a\u{fffd}b");
    }

    #[test]
    fn seeding_replaces_the_content_and_count() {
        let mut t = Tail::new(4);
        t.push(b"xx");
        t.seed(b"abcdef", 100);
        assert_eq!(t.to_output().text, "cdef");
        assert_eq!(t.total(), 100);
        t.push(b"g");
        let out = t.to_output();
        assert_eq!(
            (out.text.as_str(), out.total_bytes, out.truncated),
            ("defg", 101, true)
        );
    }

    #[test]
    fn zero_capacity_counts_only() {
        let mut t = Tail::new(0);
        t.push(b"abc");
        let out = t.to_output();
        assert_eq!(out.text, "");
        assert!(out.truncated);
        assert_eq!(out.total_bytes, 3);
    }
}
