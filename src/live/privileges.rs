//! Dropping root once the capture is open, as tcpdump -Z does: the packet
//! socket stays usable, and the code that parses hostile traffic runs
//! unprivileged.

use nix::unistd::{self, Gid, Uid, User};

use super::UserChoice;
use crate::RunError;

/// Users tried, in order, when running as root without `--user`.
const DEFAULT_USERS: [&str; 2] = ["tfwire", "nobody"];

/// What happened to the process's privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Not root to begin with (e.g. a binary with CAP_NET_RAW), or --user
    /// named the current user.
    NotNeeded,
    /// `--no-drop-privileges`.
    Kept,
    /// Running as root and no default user exists.
    NoUser,
    /// Now running as this user.
    To(String),
}

pub fn drop_privileges(choice: &UserChoice) -> Result<Dropped, RunError> {
    let euid = unistd::geteuid();
    let user = match choice {
        UserChoice::Keep => return Ok(Dropped::Kept),
        UserChoice::Named(name) => {
            let user =
                lookup(name)?.ok_or_else(|| RunError(format!("--user {name}: no such user")))?;
            if user.uid == euid && user.uid == unistd::getuid() {
                return Ok(Dropped::NotNeeded);
            }
            if !euid.is_root() {
                return Err(RunError(format!(
                    "--user {name}: switching users needs root (running as uid {euid})"
                )));
            }
            user
        }
        UserChoice::Default => {
            if !euid.is_root() {
                return Ok(Dropped::NotNeeded);
            }
            let mut found = None;
            for name in DEFAULT_USERS {
                if let Some(u) = lookup(name)? {
                    found = Some(u);
                    break;
                }
            }
            match found {
                Some(u) => u,
                None => return Ok(Dropped::NoUser),
            }
        }
    };
    switch_to(&user)?;
    Ok(Dropped::To(user.name))
}

fn lookup(name: &str) -> Result<Option<User>, RunError> {
    User::from_name(name).map_err(|e| RunError(format!("looking up user {name}: {e}")))
}

fn switch_to(user: &User) -> Result<(), RunError> {
    let fail = |what: &str, e: nix::Error| {
        RunError(format!(
            "dropping privileges to {} (uid {}, gid {}): {what}: {e}",
            user.name, user.uid, user.gid
        ))
    };
    // Supplementary groups first (root's would otherwise stay), then the
    // group, then the user: after setuid nothing else may be changed.
    #[cfg(not(any(target_vendor = "apple", target_os = "redox", target_os = "haiku")))]
    unistd::setgroups(&[user.gid]).map_err(|e| fail("setgroups", e))?;
    unistd::setgid(user.gid).map_err(|e| fail("setgid", e))?;
    unistd::setuid(user.uid).map_err(|e| fail("setuid", e))?;
    // From root to another user, setuid is irreversible: make sure of it.
    if !user.uid.is_root() {
        let regained = unistd::setuid(Uid::from_raw(0)).is_ok()
            || (user.gid.as_raw() != 0 && unistd::setgid(Gid::from_raw(0)).is_ok());
        if regained {
            return Err(RunError(format!(
                "dropping privileges to {}: root could be regained",
                user.name
            )));
        }
    }
    Ok(())
}
