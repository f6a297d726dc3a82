//! The callback client against a real HTTP host on 127.0.0.1: the manifest,
//! the artifacts upload and the result, with their retries and refusals.

use std::path::Path;
use std::time::Duration;

use delegate_guest::callback::{CallbackClient, CallbackError};
use delegate_proto::ResultStatus;

use crate::support::fixtures::{client, fast_retry, opts, result};
use crate::support::host::{JOB_ID, TestHost, token};

// ---- GET manifest -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_spec_retries_5xx_then_succeeds() {
    let host = TestHost::start().await;
    host.state().fail_next = 3;
    let spec = client(&host, opts()).fetch_spec().await.unwrap();
    assert_eq!(spec.job_id, JOB_ID);
    assert_eq!(spec.manifest.task, "echo hello");
    assert_eq!(host.state().requests["manifest"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_spec_waits_for_a_host_that_is_not_up_yet() {
    let host = TestHost::start().await;
    host.go_down().await;
    let c = client(&host, opts());
    let fetch = tokio::spawn(async move { c.fetch_spec().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.come_back().await;
    let spec = fetch.await.unwrap().unwrap();
    assert_eq!(spec.job_id, JOB_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_once_and_not_retried() {
    let host = TestHost::start().await;
    let c = CallbackClient::new(&host.url(), JOB_ID, "f".repeat(64), opts()).unwrap();
    let err = c.fetch_spec().await.unwrap_err();
    assert!(
        matches!(err, CallbackError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad token"), "{err}");
    assert_eq!(host.state().requests["manifest"], 1);
    assert!(!format!("{err:?}").contains(&"f".repeat(64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_job_is_not_found_and_not_retried() {
    let host = TestHost::start().await;
    let c = CallbackClient::new(&host.url(), "other-job", token(), opts()).unwrap();
    let err = c.fetch_spec().await.unwrap_err();
    assert!(matches!(err, CallbackError::NotFound { .. }), "{err:?}");
    assert_eq!(host.state().requests["manifest"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_host_fails_after_the_budget() {
    let host = TestHost::start().await;
    host.go_down().await;
    let mut o = opts();
    o.fetch_retry = fast_retry(Duration::from_millis(600));
    let err = client(&host, o).fetch_spec().await.unwrap_err();
    match err {
        CallbackError::Unreachable { attempts, .. } => assert!(attempts >= 2, "{attempts}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_5xx_fails_after_the_budget_with_the_host_message() {
    let host = TestHost::start().await;
    host.state().fail_next = u32::MAX;
    let mut o = opts();
    o.fetch_retry = fast_retry(Duration::from_millis(500));
    let err = client(&host, o).fetch_spec().await.unwrap_err();
    assert!(matches!(err, CallbackError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("injected failure"), "{err}");
}

// ---- artifacts and result ------------------------------------------------

fn tar_gz(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("artifacts.tar.gz");
    let file = std::fs::File::create(&path).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    let data = b"hello artifacts\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "out/a.txt", &data[..])
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_upload_and_retry_through_5xx() {
    let host = TestHost::start().await;
    host.state().fail_next = 2;
    let dir = tempfile::tempdir().unwrap();
    let path = tar_gz(dir.path());
    let ack = client(&host, opts()).upload_artifacts(&path).await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(ack.size, bytes.len() as u64);
    use sha2::Digest as _;
    assert_eq!(
        ack.sha256,
        crate::support::host::hex(&sha2::Sha256::digest(&bytes))
    );
    assert_eq!(ack.entries.len(), 1);
    assert_eq!(ack.entries[0].path, "out/a.txt");
    assert_eq!(host.state().requests["artifacts"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_artifacts_give_the_host_message() {
    let host = TestHost::start().await;
    host.state().artifact_limit = 100;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tar.gz");
    std::fs::write(&path, vec![7u8; 4 * 1024 * 1024]).unwrap();
    let err = client(&host, opts())
        .upload_artifacts(&path)
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("limit of 100 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_over_the_spec_limit_are_refused_without_a_request() {
    let host = TestHost::start().await;
    host.state().spec.as_mut().unwrap().max_artifact_bytes = 100;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tar.gz");
    std::fs::write(&path, vec![7u8; 1000]).unwrap();
    let c = client(&host, opts());
    c.fetch_spec().await.unwrap();
    let err = c.upload_artifacts(&path).await.unwrap_err();
    assert!(matches!(err, CallbackError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("at most 100"), "{err}");
    assert!(!host.state().requests.contains_key("artifacts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_artifacts_file_is_an_io_error() {
    let host = TestHost::start().await;
    let err = client(&host, opts())
        .upload_artifacts(Path::new("/nonexistent/a.tar.gz"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallbackError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/a.tar.gz"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_is_retried_until_acknowledged() {
    let host = TestHost::start().await;
    host.state().fail_next = 3;
    let ack = client(&host, opts())
        .post_result(&result(ResultStatus::Success))
        .await
        .unwrap();
    assert_eq!(ack.state, delegate_proto::JobState::Success);
    assert_eq!(host.state().requests["result"], 4);
    assert_eq!(
        host.state().result.as_ref().map(|r| r.status),
        Some(ResultStatus::Success)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_for_a_final_job_is_a_distinct_error() {
    let host = TestHost::start().await;
    host.state().final_status = 409;
    let c = client(&host, opts());
    c.post_result(&result(ResultStatus::Success)).await.unwrap();
    let err = c
        .post_result(&result(ResultStatus::Failed))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallbackError::JobFinal {
                status: 409,
                after_lost_response: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(host.state().requests["result"], 2, "409 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_result_answer_then_a_refusal_means_our_result_landed() {
    let host = TestHost::start().await;
    // Stored, but the answer is a 503; the retry then meets the real host's
    // refusal of a final job's token.
    host.state().lose_result_answers = 1;
    let err = client(&host, opts())
        .post_result(&result(ResultStatus::Success))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallbackError::JobFinal {
                status: 401,
                after_lost_response: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(host.state().result.is_some());
}
