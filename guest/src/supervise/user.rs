//! The user the agent runs as. A runner started as root drops to an
//! unprivileged user (`delegate`, else `nobody`, or `--run-as`); a runner
//! that is not root runs the agent as itself.
//!
//! Names are looked up in the local files first ([`super::user_files`]),
//! then through the system's user database.

use std::ffi::CString;
use std::path::Path;

use nix::unistd::{Gid, Uid, User};

use super::user_files;

const PASSWD_FILE: &str = "/etc/passwd";
const GROUP_FILE: &str = "/etc/group";

/// Default job user, created by the VM template.
pub const DEFAULT_USER: &str = "delegate";
/// Fallback when the template has no `delegate` user.
pub const FALLBACK_USER: &str = "nobody";

/// An unprivileged user to run the agent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    /// Name, for `USER` and messages.
    pub name: String,
    /// User id.
    pub uid: Uid,
    /// Primary group.
    pub gid: Gid,
    /// Supplementary groups.
    pub groups: Vec<Gid>,
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserPolicy {
    /// Drop privileges when root: to this user, or the default.
    Drop(Option<String>),
    /// Never drop (`--no-drop-privileges`).
    Keep,
}

/// Why no user could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The named user does not exist.
    #[error("user {0:?} does not exist")]
    Unknown(String),
    /// Neither `delegate` nor `nobody` exists.
    #[error(
        "neither {DEFAULT_USER:?} nor {FALLBACK_USER:?} exists; pass --run-as USER or --no-drop-privileges"
    )]
    NoDefault,
    /// The user is root; that is not dropping anything.
    #[error("--run-as {0:?} names uid 0; use --no-drop-privileges to run the agent as root")]
    Root(String),
    /// The user database could not be read.
    #[error("looking up user {name:?}: {source}")]
    Lookup {
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// Chooses the user. `None` means: run as the runner's own user.
pub fn resolve(policy: &UserPolicy, runner_is_root: bool) -> Result<Option<RunUser>, UserError> {
    let UserPolicy::Drop(explicit) = policy else {
        return Ok(None);
    };
    if !runner_is_root {
        if let Some(name) = explicit {
            tracing::warn!(
                "--run-as {name}: the runner is not root, the agent runs as the runner's user"
            );
        }
        return Ok(None);
    }
    let user = match explicit {
        Some(name) => lookup(name)?.ok_or_else(|| UserError::Unknown(name.clone()))?,
        // Local accounts first for both names: the template's `delegate`
        // is in /etc/passwd, and asking the system database about a name
        // it lacks costs as much as the rest of the start.
        None => match local(DEFAULT_USER).or_else(|| local(FALLBACK_USER)) {
            Some(u) => u,
            None => match system(DEFAULT_USER)? {
                Some(u) => u,
                None => system(FALLBACK_USER)?.ok_or(UserError::NoDefault)?,
            },
        },
    };
    if user.uid.is_root() {
        return Err(UserError::Root(user.name));
    }
    Ok(Some(user))
}

/// The name of the runner's own user: /etc/passwd first, then NSS, then
/// `$USER` (a uid without an account, as in some containers).
pub fn own_name() -> Option<String> {
    let uid = nix::unistd::geteuid();
    user_files::name_of(Path::new(PASSWD_FILE), uid.as_raw())
        .or_else(|| {
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
}

fn lookup(name: &str) -> Result<Option<RunUser>, UserError> {
    match local(name) {
        Some(u) => Ok(Some(u)),
        None => system(name),
    }
}

/// `name` from /etc/passwd and /etc/group.
fn local(name: &str) -> Option<RunUser> {
    let account = user_files::account(Path::new(PASSWD_FILE), name)?;
    let groups = user_files::groups(Path::new(GROUP_FILE), name, account.gid)
        .unwrap_or_else(|| vec![account.gid]);
    Some(RunUser {
        name: name.into(),
        uid: account.uid,
        gid: account.gid,
        groups,
    })
}

/// `name` from the system's user database (NSS under glibc).
fn system(name: &str) -> Result<Option<RunUser>, UserError> {
    let err = |source| UserError::Lookup {
        name: name.into(),
        source,
    };
    let Some(u) = User::from_name(name).map_err(err)? else {
        return Ok(None);
    };
    let groups = match CString::new(name) {
        Ok(c) => nix::unistd::getgrouplist(&c, u.gid).unwrap_or_else(|_| vec![u.gid]),
        Err(_) => vec![u.gid],
    };
    Ok(Some(RunUser {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
        groups,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_when_told_or_not_root() {
        assert_eq!(resolve(&UserPolicy::Keep, true).unwrap(), None);
        assert_eq!(
            resolve(&UserPolicy::Drop(Some("nobody".into())), false).unwrap(),
            None
        );
    }

    #[test]
    fn local_files_agree_with_the_system_database() {
        let local = local(FALLBACK_USER).expect("nobody in /etc/passwd");
        let system = system(FALLBACK_USER).unwrap().unwrap();
        assert_eq!((local.uid, local.gid), (system.uid, system.gid));
        let sorted = |g: &[Gid]| {
            let mut raw: Vec<u32> = g.iter().map(|g| g.as_raw()).collect();
            raw.sort_unstable();
            raw
        };
        assert_eq!(sorted(&local.groups), sorted(&system.groups));
    }

    #[test]
    fn drops_to_an_existing_user_and_refuses_unknown_or_root() {
        let u = resolve(&UserPolicy::Drop(Some("nobody".into())), true)
            .unwrap()
            .unwrap();
        assert!(!u.uid.is_root());
        assert!(u.groups.contains(&u.gid));
        let default = resolve(&UserPolicy::Drop(None), true).unwrap().unwrap();
        assert!(default.name == DEFAULT_USER || default.name == FALLBACK_USER);
        assert!(matches!(
            resolve(&UserPolicy::Drop(Some("no-such-user-xyz".into())), true),
            Err(UserError::Unknown(_))
        ));
        assert!(matches!(
            resolve(&UserPolicy::Drop(Some("root".into())), true),
            Err(UserError::Root(_))
        ));
    }
}
