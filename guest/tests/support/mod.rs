//! Test support shared by the callback tests.
#![allow(dead_code)]

pub mod fixtures;
pub mod host;
