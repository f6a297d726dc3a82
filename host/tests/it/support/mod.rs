//! Helpers shared by the manager, callback and local-provider tests (and
//! the host benchmark, which includes this module by path).

pub mod fake;
// The end-to-end tests' git helper: one copy for both test crates.
#[path = "../../../../tests/src/git.rs"]
pub mod git;
pub mod guest;
pub mod harness;
pub mod link;
pub mod local;
pub mod origin;
// The raw-socket helpers of the connection tests: one copy for both crates.
#[path = "../../../../tests/src/sockets.rs"]
pub mod sockets;
pub mod tar;
pub mod tls_origin;
pub mod wire;
