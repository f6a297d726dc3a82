//! A repository in, a patch out: the manifest's `repo` and `collect`, the
//! patch's summary in the result, and their rules.
//!
//! The host turns `repo.path` into an archive when the job is submitted
//! (the commit at `HEAD` plus the working tree as it is on disk, `.git`
//! included); the guest downloads it with its token, unpacks it at
//! `/workspace` (or `/workspace/<dir>`), and at the end makes a patch of
//! every change against what it unpacked.

use serde::{Deserialize, Serialize};

use crate::manifest::{JobManifest, ManifestError};
use crate::validate::workspace_relative;

/// The guest's own directory in the workspace (the agent's HOME and
/// TMPDIR); a repository cannot be put there.
const RUNNER_DIR: &str = ".delegate";
/// Longest `repo.path` accepted.
const MAX_REPO_PATH: usize = 4096;

/// URL schemes `repo.url` may use (no `file:` or `ext::`: a local path
/// would bypass `DELEGATE_REPO_ROOTS`, `ext::` runs a command).
pub const REPO_URL_SCHEMES: &[&str] = &["https", "http", "ssh", "git"];
/// Longest `repo.ref` accepted.
const MAX_REF: usize = 256;

/// A git repository delivered into the workspace: exactly one of `path`
/// and `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepoSpec {
    /// An absolute path on the host's machine: a git work tree under one of
    /// the host's `DELEGATE_REPO_ROOTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A remote repository the host fetches (into its cache of bare
    /// repositories, with its own git credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `url`: the branch, tag or commit (default: the remote's HEAD).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Where inside the workspace it goes (default: the workspace itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

impl RepoSpec {
    /// `dir` relative to the workspace, `None` for the workspace itself.
    pub fn relative_dir(&self) -> Option<String> {
        self.dir.as_deref().and_then(|d| workspace_relative(d).ok())
    }
}

/// What the guest collects besides artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectSpec {
    /// A patch of every change against the delivered repository (default:
    /// true when `repo` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<bool>,
}

/// The patch a job produced, as the result carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchSummary {
    /// Bytes of the patch (`git diff --binary` output).
    pub size: u64,
    /// SHA-256 of the patch, lower-case hex.
    pub sha256: String,
    /// The commit the repository was at when delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// The tree the patch applies to: the delivered working tree, with its
    /// uncommitted and untracked files.
    pub base_tree: String,
    /// Every changed path, sorted.
    pub files: Vec<ChangedFile>,
}

/// One path in a patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFile {
    /// Path relative to the repository.
    pub path: String,
    /// `added`, `modified`, `deleted`, `renamed`, `mode` (mode only) or
    /// `type` (file ↔ symlink).
    pub change: String,
    /// Lines added; `None` for a binary file.
    pub added: Option<u64>,
    /// Lines removed; `None` for a binary file.
    pub removed: Option<u64>,
}

pub(crate) fn validate(m: &JobManifest) -> Result<(), ManifestError> {
    if let Some(repo) = &m.repo {
        match (&repo.path, &repo.url) {
            (Some(_), Some(_)) => {
                return Err(ManifestError::new(
                    "repo",
                    "give either path or url, not both",
                ));
            }
            (None, None) => return Err(ManifestError::new("repo", "give path or url")),
            (Some(p), None) => check_path(p)?,
            (None, Some(u)) => check_url(u)?,
        }
        if let Some(r) = &repo.git_ref {
            if repo.url.is_none() {
                return Err(ManifestError::new(
                    "repo.ref",
                    "is only used with repo.url (repo.path delivers the working tree as it is)",
                ));
            }
            check_ref(r)?;
        }
        if let Some(dir) = &repo.dir {
            let rel =
                workspace_relative(dir).map_err(|rule| ManifestError::new("repo.dir", rule))?;
            if rel.split('/').next() == Some(RUNNER_DIR) {
                return Err(ManifestError::new(
                    "repo.dir",
                    format!("{} is the runner's own directory", RUNNER_DIR),
                ));
            }
        }
    }
    if m.collect.as_ref().and_then(|c| c.patch) == Some(true) && m.repo.is_none() {
        return Err(ManifestError::new(
            "collect.patch",
            "needs repo: the patch is made against the delivered repository",
        ));
    }
    Ok(())
}

fn check_path(p: &str) -> Result<(), ManifestError> {
    if p.contains('\0') {
        return Err(ManifestError::new("repo.path", "must not contain NUL"));
    }
    if !p.starts_with('/') {
        return Err(ManifestError::new(
            "repo.path",
            "must be an absolute path on the host's machine",
        ));
    }
    if p.len() > MAX_REPO_PATH {
        return Err(ManifestError::new(
            "repo.path",
            format!("must be at most {MAX_REPO_PATH} bytes"),
        ));
    }
    Ok(())
}

fn check_url(u: &str) -> Result<(), ManifestError> {
    let bad = |rule: String| Err(ManifestError::new("repo.url", rule));
    if u.len() > MAX_REPO_PATH || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("must be a URL without spaces or control characters".into());
    }
    let Some((scheme, rest)) = u.split_once("://") else {
        return bad(format!(
            "must be a URL with one of the schemes {}",
            REPO_URL_SCHEMES.join(", ")
        ));
    };
    if !REPO_URL_SCHEMES.contains(&scheme) {
        return bad(format!(
            "scheme {scheme:?} is not allowed; use one of {}",
            REPO_URL_SCHEMES.join(", ")
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with('-') {
        return bad("must name a host".into());
    }
    // ssh://git@host is a user name, not a secret; a password is refused.
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && (userinfo.contains(':') || scheme != "ssh")
    {
        return bad("must not carry credentials: the host's own git credentials are used".into());
    }
    Ok(())
}

fn check_ref(r: &str) -> Result<(), ManifestError> {
    let ok = !r.is_empty()
        && r.len() <= MAX_REF
        && !r.starts_with('-')
        && !r.contains("..")
        && !r.ends_with('/')
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::new(
            "repo.ref",
            "must be a branch, tag or commit: letters, digits, '.', '_', '-' and '/', not starting with '-'",
        ))
    }
}
