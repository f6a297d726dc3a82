//! delegate-guest: the runner inside a delegate VM.

pub mod callback;

pub mod agent;
pub mod app;
pub mod artifacts;
pub mod caller;
pub mod cli;
pub mod egress;
pub mod egress_relay;
pub mod env;
pub mod init;
pub mod output;
pub mod redact;
pub mod relay;
pub mod repo;
pub mod report;
pub mod run;
pub mod say;
pub mod supervise;
pub mod turns;
pub mod workspace;
