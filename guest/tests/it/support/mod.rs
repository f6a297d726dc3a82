//! Test support: `runner` drives the real `delegate-guest` binary in
//! temporary directories; `host` is a misbehaving callback host and
//! `fixtures` builds clients and events for the callback tests.

use std::time::Duration;

pub mod fixtures;
pub mod host;
pub mod runner;

/// Generous bound for anything a loaded 2-core machine should finish.
pub const LONG: Duration = Duration::from_secs(120);
