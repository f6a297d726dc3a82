//! Local accounts from `/etc/passwd` and `/etc/group`, read directly.
//!
//! glibc's `getpwnam` goes through NSS, which on a systemd host loads
//! `libnss_systemd` and probes userdb sockets: about 2.5 ms of a job's start,
//! half the runner's overhead budget. The VM template creates the job user
//! in `/etc/passwd`, so the files answer first; NSS (LDAP, userdb) is asked
//! only for names the files do not have. The static musl build reads the
//! files in any case: musl has no NSS.

use std::path::Path;

use nix::unistd::{Gid, Uid};

/// A `/etc/passwd` entry's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: Uid,
    /// Primary group.
    pub gid: Gid,
}

/// `name`'s entry in the passwd file at `path`; `None` when the file has no
/// such entry or cannot be read.
pub fn account(path: &Path, name: &str) -> Option<Account> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Account {
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
        })
    })
}

/// The name of `uid` in the passwd file at `path`.
pub fn name_of(path: &Path, uid: u32) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// The groups `name` belongs to by the group file at `path`, `primary`
/// first; `None` when the file cannot be read.
pub fn groups(path: &Path, name: &str, primary: Gid) -> Option<Vec<Gid>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut out = vec![primary];
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(_group), Some(_password), Some(gid), Some(members)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(gid) = gid.parse().map(Gid::from_raw) else {
            continue;
        };
        if members.split(',').any(|m| m.trim() == name) && !out.contains(&gid) {
            out.push(gid);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          # a comment line\n\
                          broken-line\n\
                          delegate:x:999:998:delegate job user:/home/delegate:/bin/bash\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\n\
                         docker:x:120:alice,delegate\n\
                         delegate:x:998:\n\
                         kvm:x:106: delegate \n\
                         bad:x:notanumber:delegate\n";

    fn files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("group"), GROUP).unwrap();
        dir
    }

    #[test]
    fn names_a_uid() {
        let dir = files();
        let passwd = dir.path().join("passwd");
        assert_eq!(name_of(&passwd, 999).as_deref(), Some("delegate"));
        assert_eq!(name_of(&passwd, 4242), None);
    }

    #[test]
    fn finds_accounts_by_exact_name() {
        let dir = files();
        let passwd = dir.path().join("passwd");
        assert_eq!(
            account(&passwd, "delegate"),
            Some(Account {
                uid: Uid::from_raw(999),
                gid: Gid::from_raw(998)
            })
        );
        assert_eq!(account(&passwd, "nobody").unwrap().uid.as_raw(), 65534);
        assert_eq!(account(&passwd, "deleg"), None);
        assert_eq!(account(&passwd, "broken-line"), None);
        assert_eq!(account(&dir.path().join("missing"), "root"), None);
    }

    #[test]
    fn lists_supplementary_groups_after_the_primary() {
        let dir = files();
        let group = dir.path().join("group");
        let gids: Vec<u32> = groups(&group, "delegate", Gid::from_raw(998))
            .unwrap()
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        assert_eq!(gids, [998, 120, 106]);
        assert_eq!(
            groups(&group, "bob", Gid::from_raw(5)).unwrap(),
            [Gid::from_raw(5)]
        );
        assert_eq!(
            groups(&dir.path().join("missing"), "x", Gid::from_raw(1)),
            None
        );
    }
}
