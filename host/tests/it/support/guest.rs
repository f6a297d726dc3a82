//! The test as a job's guest over real HTTP: a host with `n` silent jobs
//! on the fake provider, and a client holding one job's bootstrap.

use std::path::Path;
use std::sync::Arc;

use delegate_host::config::Settings;
use delegate_proto::api::{self, ApiError, PROTOCOL_HEADER};
use delegate_proto::event::{Event, EventBatch};
use delegate_proto::{Bootstrap, JobState, ResultStatus};
use reqwest::{Method, StatusCode};

use super::fake::FakeProvider;
use super::harness::{Host, eventually, job, settings, until_state};
use super::wire::result;

/// One job's guest (a clone is another client of the same job, for
/// requests on other tasks).
#[derive(Clone)]
pub struct GuestClient {
    http: reqwest::Client,
    base: String,
    /// The job.
    pub job_id: String,
    token: String,
}

impl GuestClient {
    /// A client for the job of bootstrap `b`.
    pub fn new(host: &Host, b: &Bootstrap) -> GuestClient {
        GuestClient {
            http: reqwest::Client::new(),
            base: host.base_url(),
            job_id: b.job_id.clone(),
            token: b.token.clone(),
        }
    }

    /// The job's token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A request to `path` as the guest: its token, the protocol header.
    pub fn req(&self, method: Method, path: String) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(PROTOCOL_HEADER, "1")
    }

    /// `GET manifest`.
    pub async fn manifest(&self) -> reqwest::Response {
        self.req(Method::GET, api::manifest_path(&self.job_id))
            .send()
            .await
            .unwrap()
    }

    /// `POST events` with `events`.
    pub async fn events(&self, events: Vec<Event>) -> reqwest::Response {
        self.req(Method::POST, api::events_path(&self.job_id))
            .json(&EventBatch { events })
            .send()
            .await
            .unwrap()
    }

    /// `POST result` with a result of `status`.
    pub async fn result(&self, status: ResultStatus) -> reqwest::Response {
        self.req(Method::POST, api::result_path(&self.job_id))
            .json(&result(status))
            .send()
            .await
            .unwrap()
    }

    /// `PUT artifacts` with `body`.
    pub async fn artifacts(&self, body: Vec<u8>) -> reqwest::Response {
        self.req(Method::PUT, api::artifacts_path(&self.job_id))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST events` with a JSON body; the status and the error message
    /// (the acknowledgement's JSON on success).
    pub async fn post_events_json(&self, body: &serde_json::Value) -> (StatusCode, String) {
        let resp = self
            .req(Method::POST, api::events_path(&self.job_id))
            .json(body)
            .send()
            .await
            .expect("POST events");
        let status = resp.status();
        if status.is_success() {
            return (status, resp.text().await.unwrap_or_default());
        }
        let err: ApiError = resp.json().await.unwrap_or(ApiError {
            code: "?".into(),
            message: "?".into(),
        });
        (status, err.message)
    }

    /// `POST events` with a batch.
    pub async fn post_events(&self, events: Vec<Event>) -> (StatusCode, String) {
        let body = serde_json::to_value(EventBatch { events }).unwrap();
        self.post_events_json(&body).await
    }
}

/// A host on the fake provider whose `n` jobs wait for the test to play
/// their guest (provisioned, silent).
pub async fn host_with_silent_jobs(
    dir: &Path,
    n: usize,
    tweak: impl FnOnce(&mut Settings),
) -> (Host, FakeProvider, Vec<GuestClient>) {
    let fake = FakeProvider::new();
    let s = settings(dir, |s| {
        s.max_running = 8;
        s.max_provisioning = 8;
        tweak(s);
    });
    let host = Host::start(s, Arc::new(fake.clone())).await;
    let mut guests = Vec::new();
    for _ in 0..n {
        let id = host.manager().submit(job("silent")).await.unwrap().id;
        let b = eventually(20, "a bootstrap", || async { fake.bootstrap(&id) }).await;
        until_state(host.manager(), &id, JobState::Provisioning, 20).await;
        eventually(20, "provisioning done", || async {
            host.manager()
                .store()
                .is_provisioned(&id)
                .unwrap()
                .then_some(())
        })
        .await;
        guests.push(GuestClient::new(&host, &b));
    }
    (host, fake, guests)
}
