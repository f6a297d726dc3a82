//! Resource URIs: `delegate://jobs/{job_id}/log`,
//! `delegate://jobs/{job_id}/patch` and
//! `delegate://jobs/{job_id}/artifacts/{path}`, their parsing, and the MIME
//! type that decides whether an artifact is served as text or as a blob.
//!
//! Artifact paths are percent-encoded segment by segment, so any file name a
//! job produced has exactly one URI and a URI never names a path with `..`.

/// The scheme and authority every resource of this server starts with.
pub const PREFIX: &str = "delegate://jobs/";

/// The URI template of a job's log.
pub const LOG_TEMPLATE: &str = "delegate://jobs/{job_id}/log";
/// The URI template of a job's patch (`git diff --binary` of its changes
/// to the repository it was given).
pub const PATCH_TEMPLATE: &str = "delegate://jobs/{job_id}/patch";
/// The URI template of a follow-up turn's own patch (against the previous
/// turn's end).
pub const TURN_PATCH_TEMPLATE: &str = "delegate://jobs/{job_id}/turn-patch";
/// The URI template of an artifact (RFC 6570 reserved expansion: `path`
/// may contain `/`).
pub const ARTIFACT_TEMPLATE: &str = "delegate://jobs/{job_id}/artifacts/{+path}";

/// What a resource URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceRef {
    /// The combined log of a job.
    Log {
        /// The job.
        job_id: String,
    },
    /// The patch of a job (`turn`: a follow-up turn's own change,
    /// `delegate://jobs/{job_id}/turn-patch`).
    Patch {
        /// The job.
        job_id: String,
        /// The turn's own patch rather than the one against the base.
        turn: bool,
    },
    /// One artifact of a job.
    Artifact {
        /// The job.
        job_id: String,
        /// Its path relative to the workspace, decoded.
        path: String,
    },
}

impl ResourceRef {
    /// The job the resource belongs to.
    pub fn job_id(&self) -> &str {
        match self {
            ResourceRef::Log { job_id }
            | ResourceRef::Patch { job_id, .. }
            | ResourceRef::Artifact { job_id, .. } => job_id,
        }
    }
}

/// Why a URI is not one of this server's resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{uri:?} is not a delegate resource: {reason} (expected {LOG_TEMPLATE} or {ARTIFACT_TEMPLATE})"
)]
pub struct UriError {
    /// The URI as given.
    pub uri: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a resource URI.
pub fn parse(uri: &str) -> Result<ResourceRef, UriError> {
    let err = |reason| UriError {
        uri: uri.to_string(),
        reason,
    };
    let rest = uri
        .strip_prefix(PREFIX)
        .ok_or(err("wrong scheme or host"))?;
    let (job_id, rest) = rest.split_once('/').ok_or(err("no job id"))?;
    if !valid_job_id(job_id) {
        return Err(err("the job id is not a job id"));
    }
    if rest == "log" {
        return Ok(ResourceRef::Log {
            job_id: job_id.to_string(),
        });
    }
    if rest == "patch" || rest == "turn-patch" {
        return Ok(ResourceRef::Patch {
            job_id: job_id.to_string(),
            turn: rest == "turn-patch",
        });
    }
    let encoded = rest
        .strip_prefix("artifacts/")
        .ok_or(err("unknown resource kind"))?;
    let mut segments = Vec::new();
    for segment in encoded.split('/') {
        let decoded = percent_decode(segment).ok_or(err("bad percent-encoding"))?;
        if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
            return Err(err("the artifact path has an empty, '.' or '..' segment"));
        }
        if decoded.contains('\0') {
            return Err(err("the artifact path contains NUL"));
        }
        segments.push(decoded);
    }
    Ok(ResourceRef::Artifact {
        job_id: job_id.to_string(),
        path: segments.join("/"),
    })
}

/// Job ids are UUIDs; accept what a UUID can look like, nothing else, so a
/// URI cannot smuggle path syntax into the store.
fn valid_job_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The URI of a job's combined log.
pub fn log_uri(job_id: &str) -> String {
    format!("{PREFIX}{job_id}/log")
}

/// The URI of a follow-up turn's own patch.
pub fn turn_patch_uri(job_id: &str) -> String {
    format!("{PREFIX}{job_id}/turn-patch")
}

/// The URI of a job's patch.
pub fn patch_uri(job_id: &str) -> String {
    format!("{PREFIX}{job_id}/patch")
}

/// The URI of an artifact.
pub fn artifact_uri(job_id: &str, path: &str) -> String {
    let encoded: Vec<String> = path.split('/').map(percent_encode).collect();
    format!("{PREFIX}{job_id}/artifacts/{}", encoded.join("/"))
}

/// The prefix shared by all artifact URIs of a job.
pub fn artifacts_prefix(job_id: &str) -> String {
    format!("{PREFIX}{job_id}/artifacts/")
}

fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The MIME type an artifact is served with, from its extension.
/// Unknown extensions are `application/octet-stream`; the reader then
/// serves the bytes as text anyway when they are valid UTF-8.
pub fn mime_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    };
    match ext.as_str() {
        "txt" | "log" | "out" | "err" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "xml" => "application/xml",
        "json" | "jsonl" | "ndjson" => "application/json",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "js" | "mjs" => "text/javascript",
        "ts" | "rs" | "py" | "sh" | "bash" | "c" | "h" | "cc" | "cpp" | "hpp" | "go" | "java"
        | "rb" | "pl" | "lua" | "sql" | "diff" | "patch" | "ini" | "cfg" | "conf" => "text/plain",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Whether content of this MIME type is text (served as `text`, not `blob`).
pub fn is_text_mime(mime: &str) -> bool {
    mime.starts_with("text/")
        || matches!(
            mime,
            "application/json"
                | "application/xml"
                | "application/yaml"
                | "application/toml"
                | "image/svg+xml"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1c2e4a-0b7d-4e0e-9a51-3d2f1b7c9e80";

    #[test]
    fn log_and_artifact_uris_round_trip() {
        assert_eq!(
            parse(&log_uri(ID)),
            Ok(ResourceRef::Log {
                job_id: ID.to_string()
            })
        );
        assert_eq!(
            parse(&patch_uri(ID)),
            Ok(ResourceRef::Patch {
                job_id: ID.to_string(),
                turn: false,
            })
        );
        assert_eq!(
            parse(&turn_patch_uri(ID)),
            Ok(ResourceRef::Patch {
                job_id: ID.to_string(),
                turn: true,
            })
        );
        for path in ["out/report.md", "a b/ü.txt", "x%y", "weird#?name"] {
            let uri = artifact_uri(ID, path);
            assert!(!uri[PREFIX.len()..].contains(' '), "{uri}");
            assert_eq!(
                parse(&uri),
                Ok(ResourceRef::Artifact {
                    job_id: ID.to_string(),
                    path: path.to_string()
                }),
                "{uri}"
            );
        }
    }

    #[test]
    fn hostile_uris_are_refused() {
        for uri in [
            "file:///etc/passwd",
            "delegate://jobs/",
            "delegate://jobs/../log",
            "delegate://jobs/abc/nothing",
            &format!("delegate://jobs/{ID}/artifacts/../../etc/passwd"),
            &format!("delegate://jobs/{ID}/artifacts/a/%2E%2E/b"),
            &format!("delegate://jobs/{ID}/artifacts/a%2Fb"),
            &format!("delegate://jobs/{ID}/artifacts/a//b"),
            &format!("delegate://jobs/{ID}/artifacts/%zz"),
            &format!("delegate://jobs/{ID}/artifacts/%00"),
            &format!("delegate://jobs/{ID}/artifacts/"),
        ] {
            assert!(parse(uri).is_err(), "{uri} should be refused");
        }
    }

    #[test]
    fn mime_types_decide_text_or_blob() {
        assert!(is_text_mime(mime_type("out/report.md")));
        assert!(is_text_mime(mime_type("data.JSON")));
        assert!(!is_text_mime(mime_type("plot.png")));
        assert_eq!(mime_type(".bashrc"), "application/octet-stream");
        assert_eq!(mime_type("Makefile"), "application/octet-stream");
    }
}
