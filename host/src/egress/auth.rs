//! Which job is asking: `Proxy-Authorization: Basic base64(job-id:token)`
//! for proxied requests, the placeholder key (`delegate.<id>.<token>`) for
//! the Anthropic endpoint. The token is checked against the hash in the
//! store in constant time (`jobs::token`), and only while the job runs.

use base64::Engine as _;
use delegate_proto::{JobManifest, network::EgressSpec};

use crate::jobs::token;
use crate::store::{Store, StoreError};

/// A job that proved who it is.
#[derive(Debug, Clone)]
pub struct JobIdentity {
    /// The job id.
    pub id: String,
    /// Its manifest (for the network policy).
    pub manifest: JobManifest,
}

/// The job id and token of a `Proxy-Authorization` value.
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, token) = text.split_once(':')?;
    Some((id.to_string(), token.to_string()))
}

/// The job id and token of the Anthropic placeholder key, taken from
/// `x-api-key` or `Authorization: Bearer`.
pub fn parse_placeholder(api_key: Option<&str>, bearer: Option<&str>) -> Option<(String, String)> {
    let from_bearer = bearer.and_then(|b| {
        let (scheme, rest) = b.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
    });
    let key = api_key.or(from_bearer)?;
    let (id, token) = EgressSpec::parse_placeholder(key.trim())?;
    Some((id.to_string(), token.to_string()))
}

/// The job, if `token` is its token and it has not finished.
pub async fn authenticate(store: &Store, id: String, token: String) -> Option<JobIdentity> {
    if !delegate_proto::api::is_valid_job_id(&id) {
        return None;
    }
    let found = store
        .run(move |s| -> Result<Option<JobIdentity>, StoreError> {
            let view = s.auth_view(&id)?;
            if !token::matches(&token, &view.token_hash) || view.state.is_final() {
                return Ok(None);
            }
            let rec = s.get_job(&id)?;
            Ok(Some(JobIdentity {
                id,
                manifest: rec.manifest,
            }))
        })
        .await;
    found.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_from_both_forms() {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("job-1:tok")
        );
        assert_eq!(parse_basic(&v), Some(("job-1".into(), "tok".into())));
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!"), None);
        let key = EgressSpec::placeholder_key("job-1", "tok");
        assert_eq!(
            parse_placeholder(Some(&key), None),
            Some(("job-1".into(), "tok".into()))
        );
        assert_eq!(
            parse_placeholder(None, Some(&format!("Bearer {key}"))),
            Some(("job-1".into(), "tok".into()))
        );
        assert_eq!(parse_placeholder(Some("sk-ant-real"), None), None);
    }
}
