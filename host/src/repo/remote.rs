//! `repo.url`: the host fetches the ref into its cache of bare repositories
//! (one per URL, so a second job fetches only what is new), then checks the
//! commit out into a scratch work tree whose archive the guest gets. git
//! runs with the host user's own configuration and credential helpers;
//! nothing of them reaches the VM (the delivered `origin` is the bare URL).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::RepoError;

/// Protocols git may use while fetching: the manifest's schemes only, so
/// neither a redirect nor a submodule can reach `file:` or `ext::`.
const ALLOWED_PROTOCOLS: &str = "https:http:ssh:git";

/// A checked-out commit of a remote repository, removed when dropped.
pub struct Checkout {
    /// The work tree (with its `.git`).
    pub dir: PathBuf,
    /// The commit checked out.
    pub commit: String,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fetches `git_ref` (default: the remote's `HEAD`) of `url` into the
/// bare cache under `cache`, and checks it out into `cache/work-<unique>`.
pub fn checkout(url: &str, git_ref: Option<&str>, cache: &Path) -> Result<Checkout, RepoError> {
    let key = crate::store::hex(&Sha256::digest(url.as_bytes()));
    let bare = cache.join(format!("{}.git", &key[..32]));
    if !bare.join("HEAD").is_file() {
        run(
            cache,
            &["init", "--quiet", "--bare", &bare.display().to_string()],
        )?;
    }
    // A ref of our own per fetch: two jobs on one URL never race on
    // FETCH_HEAD.
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let local = format!("refs/delegate/{unique}");
    let wanted = git_ref.unwrap_or("HEAD");
    let fetched = run(
        &bare,
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            "--",
            url,
            &format!("+{wanted}:{local}"),
        ],
    );
    if let Err(first) = fetched {
        // A commit id the server does not let us ask for directly: fetch
        // every branch and tag, then look for it.
        if !looks_like_commit(wanted) {
            return Err(first);
        }
        run(
            &bare,
            &[
                "fetch",
                "--quiet",
                "--",
                url,
                "+refs/heads/*:refs/delegate/heads/*",
                "+refs/tags/*:refs/delegate/tags/*",
            ],
        )?;
        run(
            &bare,
            &["update-ref", &local, &format!("{wanted}^{{commit}}")],
        )
        .map_err(|_| RepoError::Refused(format!("{url} has no commit {wanted}")))?;
    }
    let commit =
        String::from_utf8_lossy(&run(&bare, &["rev-parse", &format!("{local}^{{commit}}")])?)
            .trim()
            .to_string();
    let _ = run(&bare, &["update-ref", "-d", &local]);
    let dir = cache.join(format!("work-{unique}"));
    let out = Checkout {
        dir: dir.clone(),
        commit: commit.clone(),
    };
    // Cloned from our own bare cache: the one place the `file` transport
    // is allowed (the remote's URL never reaches this command).
    run_with(
        cache,
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            &bare.display().to_string(),
            &dir.display().to_string(),
        ],
        LOCAL_CLONE_PROTOCOLS,
    )?;
    run(&dir, &["remote", "set-url", "origin", url])?;
    run(&dir, &["checkout", "--quiet", "--detach", &commit])?;
    Ok(out)
}

fn looks_like_commit(r: &str) -> bool {
    (7..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The protocols of the clone from the bare cache into a work tree.
const LOCAL_CLONE_PROTOCOLS: &str = "file";

/// git in `dir`, never prompting, limited to the allowed protocols.
fn run(dir: &Path, args: &[&str]) -> Result<Vec<u8>, RepoError> {
    run_with(dir, args, ALLOWED_PROTOCOLS)
}

/// [`run`] with its own list of allowed protocols.
fn run_with(dir: &Path, args: &[&str], protocols: &str) -> Result<Vec<u8>, RepoError> {
    super::git_with_env(
        dir,
        args,
        &[
            ("GIT_ALLOW_PROTOCOL", protocols),
            ("GIT_TERMINAL_PROMPT", "0"),
        ],
    )
}
