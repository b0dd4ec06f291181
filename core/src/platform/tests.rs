//! OS-neutral tests of the state file and of the restore order (no privileges needed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::state::{
    Change, ResolvConfOriginal, RouteSpec, RuleSelector, RuleSpec, StateFile, undo_all,
};
use super::{DisplayChain, Error, FWMARK, ROUTE_TABLE};

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "pqvpn-platform-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sample_changes() -> Vec<Change> {
    vec![
        Change::Route(RouteSpec {
            destination: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix: 0,
            table: ROUTE_TABLE,
            oif: 7,
        }),
        Change::Rule(RuleSpec {
            ipv6: true,
            priority: 32761,
            table: ROUTE_TABLE,
            selector: RuleSelector::NotFwmark { mark: FWMARK },
        }),
        Change::ResolvedLink { ifindex: 7 },
        Change::ResolvConf {
            path: PathBuf::from("/etc/resolv.conf"),
            original: ResolvConfOriginal::Symlink {
                target: PathBuf::from("../run/systemd/resolve/stub-resolv.conf"),
            },
        },
        Change::Route(RouteSpec {
            destination: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0)),
            prefix: 8,
            table: 254,
            oif: 7,
        }),
    ]
}

#[test]
fn state_file_round_trips_and_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("roundtrip");
    let state_dir = dir.0.join("state");
    let mut state = StateFile::create(&state_dir, "pqt0").unwrap();
    for change in sample_changes() {
        state.record(change).unwrap();
    }
    let path = super::state::path_for(&state_dir, "pqt0").unwrap();
    assert_eq!(state.path(), path);

    let loaded = StateFile::load(&path).unwrap();
    assert_eq!(loaded.tun_name(), "pqt0");
    assert_eq!(loaded.changes(), sample_changes().as_slice());
    assert_eq!(StateFile::list(&state_dir).unwrap(), vec![path.clone()]);

    let file_mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    let dir_mode = std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!((file_mode, dir_mode), (0o600, 0o700));
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&state_dir).unwrap().count(), 1);

    loaded.remove().unwrap();
    assert!(!path.exists());
    assert!(StateFile::list(&state_dir).unwrap().is_empty());
}

#[test]
fn state_file_format_is_stable() {
    let dir = TempDir::new("format");
    let mut state = StateFile::create(&dir.0, "pqt0").unwrap();
    state
        .record(Change::Rule(RuleSpec {
            ipv6: false,
            priority: 32760,
            table: 254,
            selector: RuleSelector::SuppressPrefixLength { length: 0 },
        }))
        .unwrap();
    state
        .record(Change::ResolvConf {
            path: PathBuf::from("/etc/resolv.conf"),
            original: ResolvConfOriginal::Absent,
        })
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path()).unwrap()).unwrap();
    let expected = serde_json::json!({
        "version": 1,
        "tun_name": "pqt0",
        "owner_pid": std::process::id(),
        "netns": std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m)),
        "changes": [
            {"kind": "rule", "ipv6": false, "priority": 32760, "table": 254,
             "selector": {"kind": "suppress_prefix_length", "length": 0}},
            {"kind": "resolv_conf", "path": "/etc/resolv.conf", "original": {"kind": "absent"}},
        ],
    });
    assert_eq!(json, expected);
}

#[test]
fn state_file_rejects_bad_names_and_versions() {
    let dir = TempDir::new("bad");
    for name in ["", "..", "a/b", "sixteen-chars-xx"] {
        assert!(
            matches!(
                StateFile::create(&dir.0, name),
                Err(Error::InvalidConfig(_))
            ),
            "{name:?}"
        );
    }
    let path = dir.0.join("x.json");
    std::fs::write(&path, br#"{"version": 99, "tun_name": "x", "changes": []}"#).unwrap();
    assert!(matches!(
        StateFile::load(&path),
        Err(Error::StateParse { .. })
    ));
    std::fs::write(&path, b"{not json").unwrap();
    let error = StateFile::load(&path).unwrap_err();
    assert!(
        DisplayChain(&error)
            .to_string()
            .starts_with("Failed to parse the state file")
    );
    // A missing state directory lists nothing.
    assert!(StateFile::list(&dir.0.join("missing")).unwrap().is_empty());
}

#[test]
fn undo_runs_newest_first_and_continues_past_failures() {
    let changes = sample_changes();
    let mut seen = Vec::new();
    let (failed, first) = undo_all(&changes, |change| {
        seen.push(change.clone());
        Ok(())
    });
    assert!(failed.is_empty() && first.is_none());
    let mut reversed = changes.clone();
    reversed.reverse();
    assert_eq!(seen, reversed);

    // Every change that fails is kept, oldest first; the newest failure is reported.
    let mut seen = Vec::new();
    let (failed, first) = undo_all(&changes, |change| {
        seen.push(change.clone());
        match change {
            Change::Route(_) => Err(Error::Unsupported("undo a route")),
            _ => Ok(()),
        }
    });
    assert_eq!(seen.len(), changes.len());
    assert_eq!(
        failed,
        vec![changes[0].clone(), changes[4].clone()],
        "failed changes stay in their original order"
    );
    assert!(matches!(first, Some(Error::Unsupported("undo a route"))));
}

#[test]
fn specs_display_like_ip() {
    let rule = RuleSpec {
        ipv6: false,
        priority: 32761,
        table: ROUTE_TABLE,
        selector: RuleSelector::NotFwmark { mark: FWMARK },
    };
    assert_eq!(
        rule.to_string(),
        "-4 priority 32761 not fwmark 0xcab0 lookup 51888"
    );
    let route = RouteSpec {
        destination: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
        prefix: 8,
        table: 254,
        oif: 3,
    };
    assert_eq!(route.to_string(), "10.0.0.0/8 dev #3 table 254");
}

#[test]
fn errors_chain_their_sources() {
    let error = Error::Restore {
        failed: 1,
        total: 3,
        first: Box::new(Error::DeleteRule(
            "-4 priority 1 to 1.2.3.4/32 lookup 254".into(),
            std::io::Error::from_raw_os_error(1),
        )),
    };
    let text = DisplayChain(&error).to_string();
    assert!(
        text.starts_with(
            "Failed to undo 1 of 3 network changes: Failed to remove the routing rule -4 priority 1"
        ),
        "{text}"
    );
    assert!(text.contains("Operation not permitted"), "{text}");
}

/// The full tunnel's gateway rule changed from `to GATEWAY` to `to GATEWAY ipproto udp dport
/// PORT` (security review finding 6); state files written before still load, so a crashed
/// earlier version's rule is still undone.
#[test]
fn finding6_state_files_with_the_old_gateway_rule_still_load() {
    let dir = TempDir::new("old-gateway-rule");
    let path = dir.0.join("pqt0.json");
    std::fs::write(
        &path,
        br#"{"version": 1, "tun_name": "pqt0", "owner_pid": 1, "netns": 0, "changes": [
            {"kind": "rule", "ipv6": false, "priority": 32759, "table": 254,
             "selector": {"kind": "to", "destination": "192.0.2.10", "prefix": 32}}]}"#,
    )
    .unwrap();
    let loaded = StateFile::load(&path).unwrap();
    assert_eq!(
        loaded.changes(),
        [Change::Rule(RuleSpec {
            ipv6: false,
            priority: 32759,
            table: 254,
            selector: RuleSelector::To {
                destination: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
                prefix: 32,
            },
        })]
    );

    let mut state = StateFile::create(&dir.0, "pqt1").unwrap();
    let rule = RuleSpec {
        ipv6: false,
        priority: 32759,
        table: 254,
        selector: RuleSelector::ToUdpPort {
            destination: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            prefix: 32,
            port: 4500,
        },
    };
    assert_eq!(
        rule.to_string(),
        "-4 priority 32759 to 192.0.2.10/32 ipproto udp dport 4500 lookup 254"
    );
    state.record(Change::Rule(rule.clone())).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path()).unwrap()).unwrap();
    assert_eq!(
        json["changes"][0]["selector"],
        serde_json::json!({"kind": "to_udp_port", "destination": "192.0.2.10", "prefix": 32,
                           "port": 4500})
    );
    assert_eq!(
        StateFile::load(state.path()).unwrap().changes(),
        [Change::Rule(rule)]
    );
}
