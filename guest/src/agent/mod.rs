//! What runs for each agent type. The argv builders are pure functions of
//! the manifest; nothing from the manifest is ever spliced into shell text.

pub mod claude;
pub mod custom;
mod resolve;
pub mod script;
pub mod stream_json;

use delegate_proto::{AgentType, JobManifest};

pub use resolve::{ResolveError, resolve_program};

/// A program and its arguments, plus environment defaults the agent type
/// needs (the manifest's `env` wins over them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// A program name (looked up on the agent's `PATH`) or a path.
    pub program: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Environment entries set unless the manifest sets them.
    pub env_defaults: Vec<(String, String)>,
    /// A short description for status lines (never the script or the task).
    pub label: String,
}

/// The invocation for a manifest's agent type. `resume` is the Claude Code
/// session a follow-up turn continues (`claude` only; other agents start
/// afresh in the same workspace).
pub fn invocation(m: &JobManifest, resume: Option<&str>) -> Invocation {
    match (m.agent_type, resume) {
        (AgentType::Script, _) => script::invocation(m),
        (AgentType::Custom, _) => custom::invocation(m),
        (AgentType::Claude, None) => claude::invocation(m),
        (AgentType::Claude, Some(session)) => claude::resuming(claude::invocation(m), session),
    }
}
