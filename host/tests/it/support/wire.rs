//! Wire values the tests send as a guest would.

use delegate_proto::{JobResult, OutputTails, ResultStatus};

/// A result with `status`, exit code 0 and nothing else.
pub fn result(status: ResultStatus) -> JobResult {
    JobResult {
        status,
        exit_code: Some(0),
        signal: None,
        duration_ms: 5,
        output: OutputTails::default(),
        artifacts: vec![],
        error: None,
        error_kind: None,
        agent_result: None,
        patch: None,
        turn_patch: None,
    }
}
