//! Finding the agent's program before anything is spawned, so that a missing
//! binary is a clear error rather than an exec failure in a child.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a program could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such file on the agent's `PATH` (or at the given path).
    #[error("{program:?} was not found (searched PATH={path})")]
    NotFound {
        /// The program as named.
        program: String,
        /// The `PATH` that was searched.
        path: String,
    },
    /// The file exists but is not an executable file.
    #[error("{0} is not an executable file")]
    NotExecutable(PathBuf),
}

/// Resolves `program` like `execvp` would for the agent: a name with a `/`
/// is a path (relative ones against `cwd`, the workspace), a bare name is
/// looked up on `path_var`.
pub fn resolve_program(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, ResolveError> {
    if program.is_empty() {
        return Err(ResolveError::NotFound {
            program: program.into(),
            path: path_var.into(),
        });
    }
    if program.contains('/') {
        let p = cwd.join(program);
        return if p.exists() {
            check_executable(p)
        } else {
            Err(ResolveError::NotFound {
                program: program.into(),
                path: path_var.into(),
            })
        };
    }
    let mut not_executable = None;
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            match check_executable(candidate) {
                Ok(p) => return Ok(p),
                Err(e) => not_executable = not_executable.or(Some(e)),
            }
        }
    }
    Err(not_executable.unwrap_or_else(|| ResolveError::NotFound {
        program: program.into(),
        path: path_var.into(),
    }))
}

fn check_executable(p: PathBuf) -> Result<PathBuf, ResolveError> {
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(p),
        _ => Err(ResolveError::NotExecutable(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_on_path_and_by_relative_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(resolve_program("tool", &path, Path::new("/")).unwrap(), exe);
        assert_eq!(
            resolve_program("./tool", "", dir.path()).unwrap(),
            dir.path().join("./tool")
        );
        assert_eq!(
            resolve_program(exe.to_str().unwrap(), "", Path::new("/")).unwrap(),
            exe
        );
    }

    #[test]
    fn reports_missing_and_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().display().to_string();
        assert!(matches!(
            resolve_program("nope", &path, dir.path()),
            Err(ResolveError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_program("data", &path, dir.path()),
            Err(ResolveError::NotExecutable(_))
        ));
        let msg = resolve_program("claude", "/a:/b", dir.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("claude") && msg.contains("/a:/b"), "{msg}");
    }
}
