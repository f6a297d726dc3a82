//! What the host's HTTP listeners share below their routes: [`conn`], the
//! connection loop with its timeouts, cap and descriptor headroom, used by
//! the callback API, the egress gateway and MCP over HTTP alike.

pub mod conn;
