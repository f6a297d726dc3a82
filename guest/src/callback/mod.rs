//! The guest's HTTP transport to the host's callback API: bootstrap
//! discovery, the manifest, the event uplink, artifacts and the result.

mod bootstrap;
mod error;

use std::path::{Path, PathBuf};
use std::time::Duration;

use delegate_proto::api::{ArtifactsAck, JobSpec, ResultAck};
use delegate_proto::{Event, JobResult};

pub use bootstrap::{BootstrapPaths, BootstrapSource, find_bootstrap, find_bootstrap_in};
pub use error::CallbackError;

/// Tuning of the transport. `Default` gives values fit for production.
#[derive(Debug, Clone)]
pub struct CallbackOptions {
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for one JSON request, from start to the full answer.
    pub request_timeout: Duration,
}

impl Default for CallbackOptions {
    fn default() -> Self {
        CallbackOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A client of one job's callback API.
#[derive(Clone)]
pub struct CallbackClient {
    _opts: CallbackOptions,
}

impl CallbackClient {
    /// Builds a client for `job_id` at `base_url`.
    pub fn new(
        _base_url: &str,
        _job_id: &str,
        _token: String,
        _opts: CallbackOptions,
    ) -> Result<Self, CallbackError> {
        unimplemented!()
    }

    /// `GET manifest`.
    pub async fn fetch_spec(&self) -> Result<JobSpec, CallbackError> {
        unimplemented!()
    }

    /// Starts the event uplink.
    pub fn start_uplink(&self, _spool_dir: PathBuf) -> Uplink {
        unimplemented!()
    }

    /// `PUT artifacts`.
    pub async fn upload_artifacts(&self, _tar_gz: &Path) -> Result<ArtifactsAck, CallbackError> {
        unimplemented!()
    }

    /// `POST result`.
    pub async fn post_result(&self, _result: &JobResult) -> Result<ResultAck, CallbackError> {
        unimplemented!()
    }
}

/// The event uplink.
pub struct Uplink {}

impl Uplink {
    /// Queues an event.
    pub fn send(&self, _event: Event) {
        unimplemented!()
    }

    /// Becomes true once the host says the job is cancelled.
    pub fn cancelled(&self) -> tokio::sync::watch::Receiver<bool> {
        unimplemented!()
    }

    /// Delivers what is pending and stops.
    pub async fn flush(self, _within: Duration) -> FlushReport {
        unimplemented!()
    }
}

/// What the uplink achieved.
#[derive(Debug)]
pub struct FlushReport {
    /// Highest seq the host acknowledged.
    pub delivered_up_to: u64,
}
