//! `delegate-host apply JOB_ID [--check] [--path DIR]`: takes a job's patch
//! into a local repository in one step. The patch is tried as it is first
//! (the usual case: the repository is still at the tree the job was given);
//! when that does not apply, `git apply --3way` merges it against the base
//! blobs the patch names, where the repository has them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;

use super::{CliError, exit, ids, out};
use crate::jobs::JobManager;

/// `apply`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The job id, or enough of its first characters to name one job.
    pub id: String,
    /// Only check that the patch applies; change nothing.
    #[arg(long)]
    pub check: bool,
    /// The repository to apply it to (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// For a follow-up turn: apply only its own change (against where the
    /// previous turn left the tree), to a repository that has the earlier
    /// turns' changes already.
    #[arg(long)]
    pub turn: bool,
    /// Print the outcome as JSON (`jobId`, `path`, `outcome`, `merge`,
    /// `checkOnly`, `message`) instead of a sentence.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

/// What `apply` did, for text or JSON.
struct Outcome<'a> {
    id: &'a str,
    dir: &'a Path,
    /// `applied`, `applies` (--check), `empty` (nothing to apply),
    /// `does-not-apply` or `conflicts`.
    outcome: &'static str,
    /// `clean` or `3way`, when the patch applies.
    merge: Option<&'static str>,
    check: bool,
    /// The sentence a person reads; git's complaint for a failure.
    message: String,
}

impl Outcome<'_> {
    fn ok(&self) -> bool {
        matches!(self.outcome, "applied" | "applies" | "empty")
    }

    /// Prints the outcome; the exit code (0 when the patch applied or would).
    fn print(&self, json: bool) -> Result<u8, CliError> {
        if json {
            out::json(&serde_json::json!({
                "jobId": self.id,
                "path": self.dir.display().to_string(),
                "outcome": self.outcome,
                "merge": self.merge,
                "checkOnly": self.check,
                "message": self.message,
            }))?;
        } else if self.ok() {
            out::line(&self.message)?;
        } else {
            out::note(&self.message);
        }
        Ok(if self.ok() { exit::OK } else { exit::FAILURE })
    }
}

/// Runs `apply`; the exit code is 0 when the patch applied (or would).
pub fn run(jobs: &JobManager, args: &ApplyArgs) -> Result<u8, CliError> {
    let id = ids::resolve(jobs, &args.id)?;
    let patch = if args.turn {
        jobs.turn_patch_file(&id)?
    } else {
        jobs.patch_file(&id)?
    };
    let dir = match &args.path {
        Some(p) => p.clone(),
        None => std::env::current_dir().map_err(|source| CliError::Read {
            path: PathBuf::from("."),
            source,
        })?,
    };
    let size = std::fs::metadata(&patch)
        .map_err(|source| CliError::Read {
            path: patch.clone(),
            source,
        })?
        .len();
    let outcome = |outcome, merge, message| Outcome {
        id: &id,
        dir: &dir,
        outcome,
        merge,
        check: args.check,
        message,
    };
    if size == 0 {
        let said = format!("job {id} changed nothing; there is nothing to apply");
        return outcome("empty", None, said).print(args.json);
    }
    let plain = git_apply(&dir, &patch, &["--check"])?;
    let (mode, merge): (&[&str], _) = if plain.ok {
        (&[], "clean")
    } else {
        let merged = git_apply(&dir, &patch, &["--check", "--3way"])?;
        if !merged.ok {
            let said = format!(
                "the patch of job {id} does not apply to {}:\n{}",
                dir.display(),
                plain.stderr
            );
            return outcome("does-not-apply", None, said).print(args.json);
        }
        (&["--3way"], "3way")
    };
    let how = if mode.is_empty() {
        "cleanly"
    } else {
        "with a 3-way merge"
    };
    if args.check {
        let said = format!("the patch of job {id} applies {how} to {}", dir.display());
        return outcome("applies", Some(merge), said).print(args.json);
    }
    let applied = git_apply(&dir, &patch, mode)?;
    if !applied.ok {
        let said = format!(
            "applying the patch of job {id} left conflicts in {}:\n{}",
            dir.display(),
            applied.stderr
        );
        return outcome("conflicts", Some(merge), said).print(args.json);
    }
    let said = format!("applied the patch of job {id} {how} to {}", dir.display());
    outcome("applied", Some(merge), said).print(args.json)
}

struct Applied {
    ok: bool,
    stderr: String,
}

/// `git -C dir apply [extra] --whitespace=nowarn PATCH`. Paths in the patch
/// are relative to the repository's top level, so git runs there.
fn git_apply(dir: &Path, patch: &Path, extra: &[&str]) -> Result<Applied, CliError> {
    let top = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--show-toplevel"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CliError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
    if !top.status.success() {
        return Err(CliError::Usage(format!(
            "{} is not inside a git repository; give one with --path",
            dir.display()
        )));
    }
    let top = PathBuf::from(String::from_utf8_lossy(&top.stdout).trim());
    let res = Command::new("git")
        .arg("-C")
        .arg(&top)
        .arg("apply")
        .args(extra)
        .arg("--whitespace=nowarn")
        .arg(patch)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CliError::Read {
            path: patch.to_path_buf(),
            source,
        })?;
    Ok(Applied {
        ok: res.status.success(),
        stderr: String::from_utf8_lossy(&res.stderr).trim().to_string(),
    })
}
