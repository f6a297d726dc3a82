//! The agent's output: each stream is read by its own thread, redacted,
//! written in full to a log file, kept as a bounded tail, and (in streaming
//! mode) cut into log chunks with byte offsets. Memory stays bounded whatever
//! the volume: one read buffer, the tail and at most a secret's length held
//! back by the redactor.

mod chunk;
mod pump;
mod tail;

pub use chunk::Chunker;
pub use pump::{Observer, Pump, PumpResult};
pub use tail::Tail;
