//! The size caps of MCP messages, in one place so they agree with each
//! other and with the manifest's.
//!
//! A `submit_job` call carries a whole manifest (up to
//! [`MAX_MANIFEST_BYTES`], whose input files are base64 in it) inside a
//! JSON-RPC envelope, so one message may be that plus room for the envelope.
//! The same cap holds for a stdio line and an HTTP request body.

pub use delegate_proto::manifest::MAX_MANIFEST_BYTES;

/// Room for the JSON-RPC envelope and the tool call around a manifest.
const ENVELOPE_BYTES: usize = 1 << 20;

/// Most bytes in one MCP message (a stdio line or an HTTP body).
pub const MAX_MESSAGE_BYTES: usize = MAX_MANIFEST_BYTES + ENVELOPE_BYTES;
