//! Test doubles and helpers shared by the end-to-end tests.

pub mod pve_sim;
