//! Helpers shared by the manager, callback and local-provider tests.
#![allow(dead_code)]

pub mod fake;
pub mod harness;
pub mod tar;
