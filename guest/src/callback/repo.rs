//! The repository in and the patch out: `GET repo` streams the job's
//! repository archive to a file, `PUT patch` streams the patch back.

use std::path::Path;

use delegate_proto::api::{self, BASE_COMMIT_HEADER, PatchAck};
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::CallbackError;
use super::client::CallbackClient;
use super::http::{self, Failure, body_timeout, with_retries};

impl CallbackClient {
    /// `GET repo`: writes the job's repository archive (tar.gz) to `dest`
    /// and returns the base commit the host named, if any. Retried like the
    /// manifest; a retry writes the file from its start. Refuses more than
    /// `max` bytes.
    pub async fn download_repo(
        &self,
        dest: &Path,
        max: u64,
    ) -> Result<Option<String>, CallbackError> {
        const OP: &str = "GET repo";
        let path = api::repo_path(self.job_id());
        let io_err = |source| CallbackError::Io {
            op: "writing the repository archive",
            path: dest.to_path_buf(),
            source,
        };
        with_retries(OP, &self.opts.fetch_retry, false, || async {
            let mut resp = self
                .endpoint
                .request(Method::GET, &path)
                .timeout(body_timeout(
                    self.opts.request_timeout,
                    max,
                    self.opts.upload_min_rate,
                ))
                .send()
                .await
                .map_err(|e| Failure::from_reqwest(&e))?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.bytes().await.unwrap_or_default();
                let cut = body.len().min(64 * 1024);
                return Err(http::status_failure(OP, status, &body[..cut]));
            }
            let base = resp
                .headers()
                .get(BASE_COMMIT_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_string);
            let mut file = tokio::fs::File::create(dest)
                .await
                .map_err(|e| Failure::Fatal(io_err(e)))?;
            let mut written: u64 = 0;
            while let Some(chunk) = resp.chunk().await.map_err(|e| Failure::from_reqwest(&e))? {
                written += chunk.len() as u64;
                if written > max {
                    return Err(Failure::Fatal(CallbackError::TooLarge {
                        op: OP,
                        message: format!("the repository archive is over {max} bytes"),
                    }));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Failure::Fatal(io_err(e)))?;
            }
            file.flush().await.map_err(|e| Failure::Fatal(io_err(e)))?;
            Ok(base)
        })
        .await
    }

    /// `PUT patch`: streams the patch at `patch` to the host.
    pub async fn upload_patch(&self, patch: &Path) -> Result<PatchAck, CallbackError> {
        let path = api::patch_path(self.job_id());
        self.put_file("PUT patch", &path, patch, "text/x-diff")
            .await
    }
}
