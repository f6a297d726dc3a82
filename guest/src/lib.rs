//! delegate-guest: the runner inside a delegate VM.

pub mod callback;

pub mod agent;
pub mod app;
pub mod artifacts;
pub mod caller;
pub mod cli;
pub mod env;
pub mod output;
pub mod redact;
pub mod repo;
pub mod report;
pub mod run;
pub mod supervise;
pub mod workspace;
