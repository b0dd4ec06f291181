//! Who may control tunnels: root, and members of the control group (`pqvpn` by default).
//! The caller is whoever `SO_PEERCRED` says connected the socket (its credentials at
//! `connect(2)`, which it cannot fake); membership is its primary group at connect time, or
//! the group's member list for its user.

use nix::unistd::{Gid, Group, Uid, User};

/// A connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Root or a member of the control group.
    pub(crate) authorized: bool,
}

impl Caller {
    /// The caller with credentials `uid`/`gid`, judged against group `group` (root alone
    /// without one).
    pub(crate) fn new(uid: u32, gid: u32, group: Option<&str>) -> Self {
        Self {
            uid,
            gid,
            authorized: uid == 0 || group.is_some_and(|g| in_group(uid, gid, g)),
        }
    }

    /// The refusal for a caller that is not authorized.
    pub(crate) fn refusal(&self, group: Option<&str>) -> String {
        match group {
            Some(group) => format!(
                "not authorized: only root and members of group {group} may control pqvpn \
                 tunnels (you are uid {}); ask an administrator to run `usermod -aG {group} USER`",
                self.uid
            ),
            None => format!(
                "not authorized: only root may control this tunnel (you are uid {})",
                self.uid
            ),
        }
    }
}

fn in_group(uid: u32, gid: u32, group: &str) -> bool {
    let Ok(Some(group)) = Group::from_name(group) else {
        return false;
    };
    if Gid::from_raw(gid) == group.gid {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    user.gid == group.gid || group.mem.contains(&user.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_members_are_authorized_others_are_not() {
        // nobody (65534) with primary group nogroup (65534) on Debian.
        let Ok(Some(nogroup)) = Group::from_gid(Gid::from_raw(65534)) else {
            println!("skipped: no group 65534 here");
            return;
        };
        let name = nogroup.name;
        assert!(Caller::new(0, 0, Some(&name)).authorized, "root");
        assert!(
            Caller::new(0, 0, Some("no-such-group-here")).authorized,
            "root, whatever the group"
        );
        assert!(
            Caller::new(65534, 65534, Some(&name)).authorized,
            "primary group"
        );
        assert!(!Caller::new(65534, 1, Some("no-such-group-here")).authorized);
        // uid 1 (daemon) is not in nogroup, by primary group or list.
        assert!(!Caller::new(1, 1, Some(&name)).authorized);
        let refusal = Caller::new(1, 1, Some(&name)).refusal(Some("pqvpn"));
        assert!(
            refusal.contains("group pqvpn") && refusal.contains("uid 1"),
            "{refusal}"
        );
        // Without a group (`pqvpn up`'s socket): root alone.
        assert!(Caller::new(0, 0, None).authorized);
        assert!(!Caller::new(65534, 65534, None).authorized);
        assert!(
            Caller::new(65534, 65534, None)
                .refusal(None)
                .contains("only root")
        );
    }
}
