//! Profiles from files: owners, modes, symbolic links, PSK files and the keyring, and the
//! errors each mistake gets.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use pqvpn_core::ike::{Lifetime, Mode};
use pqvpn_core::profile::MIN_PSK_CHARS;
use pqvpn_core::wire::IkeId;

use super::*;

const GOOD: &str = r#"
gateway = "198.18.0.1"
local_id = "client.test"
remote_id = "gw.test"
[auth]
psk = "a-test-psk-not-a-secret"
"#;

#[test]
fn minimal_profile_defaults_to_hybrid_full_tunnel() {
    let p = Profile::parse("t", GOOD).unwrap();
    assert_eq!(p.gateway, "198.18.0.1:500".parse().unwrap());
    assert_eq!(p.initiator.policy.mode, Mode::Hybrid);
    assert!(p.spec.network.full_tunnel);
    assert_eq!(p.initiator.remote_id, Some(IkeId::Fqdn("gw.test".into())));
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_line() {
    let e = Profile::parse("t", &format!("{GOOD}\n[network]\nmtuu = 1400\n")).unwrap_err();
    assert!(e.contains("mtuu") && e.contains("line 9"), "{e}");
    let e =
        Profile::parse("t", &GOOD.replace("gateway", "mode = \"quantum\"\ngateway")).unwrap_err();
    assert!(e.contains("mode") && e.contains("quantum"), "{e}");
    let e = Profile::parse("t", "gateway = 5\n").unwrap_err();
    assert!(e.contains("gateway") && e.contains("line 1"), "{e}");
}

#[test]
fn ike_timers_take_durations_with_units_and_refuse_nonsense() {
    let p = Profile::parse("t", GOOD).unwrap();
    assert_eq!(p.initiator.ike_lifetime, Lifetime::ike_default());
    assert_eq!(p.initiator.child_lifetime, Lifetime::child_default());
    assert_eq!(p.initiator.dpd_interval, Some(Duration::from_secs(30)));
    assert_eq!(p.initiator.retransmit.attempts, 6);
    let text = format!(
        "{GOOD}[ike]\nrekey_time = \"2h\"\nchild_rekey_time = 900\ndpd_delay = \"5s\"\n\
         retransmit_tries = 3\n"
    );
    let p = Profile::parse("t", &text).unwrap();
    assert_eq!(
        p.initiator.ike_lifetime,
        Lifetime::new(Duration::from_secs(7200))
    );
    assert_eq!(
        p.initiator.child_lifetime,
        Lifetime::new(Duration::from_secs(900))
    );
    assert_eq!(p.initiator.dpd_interval, Some(Duration::from_secs(5)));
    assert_eq!(p.initiator.retransmit.attempts, 3);
    assert!(!p.initiator.require_child_pfs);
    let p = Profile::parse(
        "t",
        &format!("{GOOD}[ike]\ndpd_delay = 0\nrequire_child_pfs = true\n"),
    )
    .unwrap();
    assert_eq!(p.initiator.dpd_interval, None);
    assert!(p.initiator.require_child_pfs);
    for (line, key) in [
        ("rekey_time = \"5s\"", "ike.rekey_time"),
        ("rekey_time = \"31d\"", "ike.rekey_time"),
        ("child_rekey_time = \"1 fortnight\"", "ike.child_rekey_time"),
        ("child_rekey_time = \"h\"", "ike.child_rekey_time"),
        ("dpd_delay = \"2h\"", "ike.dpd_delay"),
        ("rekey_time = \"99999999999999999999d\"", "ike.rekey_time"),
        ("retransmit_tries = 0", "ike.retransmit_tries"),
        ("retransmit_tries = 11", "ike.retransmit_tries"),
    ] {
        let e = Profile::parse("t", &format!("{GOOD}[ike]\n{line}\n")).unwrap_err();
        assert!(e.contains(key), "{line}: {e}");
    }
}

#[test]
fn psk_never_appears_in_errors() {
    let text = GOOD.replace(
        "psk = \"a-test-psk-not-a-secret\"",
        "psk = \"a-test-psk-not-a-secret\"\npsk_file = \"/x\"",
    );
    let e = Profile::parse("t", &text).unwrap_err();
    assert!(!e.contains("a-test-psk-not-a-secret"), "{e}");
    assert!(e.contains("exactly one"), "{e}");
    // Parse errors on the PSK's line quote neither the line nor the value.
    for bad in [
        "psk = 123456789012345678901",
        "psk = \"a-test-psk-not-a-secret\" trailing",
        "psk = \"a-test-psk-not-a-secret\\q\"",
    ] {
        let text = GOOD.replace("psk = \"a-test-psk-not-a-secret\"", bad);
        let e = Profile::parse("t", &text).unwrap_err();
        assert!(
            e.contains("line 6") && !e.contains("a-test-psk") && !e.contains("12345678901"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn psk_keyring_reads_the_entry_of_local_id_at_gateway() {
    let text = GOOD.replace("psk = \"a-test-psk-not-a-secret\"", "psk_keyring = true");
    let keyring = Keyring::mock();
    let load = |keyring: &Keyring| {
        Profile::from_text(
            "work".into(),
            &text,
            Origin {
                path: "/etc/pqvpn/work.toml",
                mode: 0o600,
            },
            || Ok(keyring.clone()),
        )
    };
    let e = load(&keyring).unwrap_err();
    assert!(
        e.starts_with("auth.psk_keyring: no PSK for client.test@198.18.0.1 (service pqvpn)"),
        "{e}"
    );
    assert!(
        e.contains("`pqvpn secret set /etc/pqvpn/work.toml`") && !e.contains('\n'),
        "{e}"
    );
    keyring
        .set_psk("client.test@198.18.0.1", b"kr-secret-of-twenty-plus")
        .unwrap();
    let p = load(&keyring).unwrap();
    assert_eq!(p.initiator.psk.expose(), b"kr-secret-of-twenty-plus");
    // Still exactly one source, and the secret never shows up in an error.
    let both = text.replace(
        "psk_keyring = true",
        "psk_keyring = true\npsk = \"kr-secret-of-twenty-plus\"",
    );
    let origin = Origin {
        path: "p",
        mode: 0o600,
    };
    let e = Profile::from_text("w".into(), &both, origin, || Ok(keyring.clone())).unwrap_err();
    assert!(
        e.contains("exactly one") && !e.contains("kr-secret-of-twenty-plus"),
        "{e}"
    );
}

/// A directory of its own under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pqvpn-profile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `name` with `text` and then sets `mode` (whatever the umask).
    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn with_psk_file(path: &Path) -> String {
    GOOD.replace(
        "psk = \"a-test-psk-not-a-secret\"",
        &format!("psk_file = \"{}\"", path.display()),
    )
}

#[test]
fn group_readable_psk_file_is_refused() {
    let dir = TempDir::new("group");
    let path = dir.write("psk", "file-secret-of-twenty-plus\n", 0o640);
    let text = with_psk_file(&path);
    let e = Profile::parse("t", &text).unwrap_err();
    assert!(
        e.contains("auth.psk_file") && e.contains("group or others") && e.contains("chmod 600"),
        "{e}"
    );
    for mode in [0o604, 0o620, 0o601] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let e = Profile::parse("t", &text).unwrap_err();
        assert!(e.contains("chmod 600"), "{mode:o}: {e}");
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let p = Profile::parse("t", &text).unwrap();
    assert_eq!(p.initiator.psk.expose(), b"file-secret-of-twenty-plus");
}

#[test]
fn symlinked_psk_file_is_refused() {
    let dir = TempDir::new("link");
    let target = dir.write("psk", "file-secret-of-twenty-plus\n", 0o600);
    let link = dir.0.join("psk-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = Profile::parse("t", &with_psk_file(&link)).unwrap_err();
    assert!(
        e.contains("auth.psk_file") && e.contains("symbolic link") && e.contains("psk-link"),
        "{e}"
    );
    assert!(!e.contains("file-secret"), "{e}");
    // The file itself is fine.
    Profile::parse("t", &with_psk_file(&target)).unwrap();
}

#[test]
fn symlinked_profile_is_refused() {
    let dir = TempDir::new("plink");
    let target = dir.write("work.toml", GOOD, 0o600);
    let link = dir.0.join("link.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = Profile::load(&link).unwrap_err();
    assert!(e.contains("profile") && e.contains("symbolic link"), "{e}");
    let e = GatewayProfile::load(&link).unwrap_err();
    assert!(e.contains("symbolic link"), "{e}");
    Profile::load(&target).unwrap();
}

#[test]
fn psk_file_that_is_not_a_regular_file_is_refused_without_blocking() {
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("psk");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    fs::set_permissions(&fifo, fs::Permissions::from_mode(0o600)).unwrap();
    let e = Profile::parse("t", &with_psk_file(&fifo)).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    let e = Profile::parse("t", &with_psk_file(&dir.0)).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
}

/// The owner check needs a file owned by someone else, which only root can make.
#[test]
fn psk_file_or_profile_owned_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to give a file to another user");
        return;
    }
    let dir = TempDir::new("owner");
    let path = dir.write("psk", "file-secret-of-twenty-plus\n", 0o600);
    std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
    let e = Profile::parse("t", &with_psk_file(&path)).unwrap_err();
    assert!(
        e.contains("auth.psk_file") && e.contains("belongs to uid 1000") && e.contains("root"),
        "{e}"
    );
    let profile = dir.write("work.toml", GOOD, 0o600);
    std::os::unix::fs::chown(&profile, Some(1000), None).unwrap();
    let e = Profile::load(&profile).unwrap_err();
    assert!(
        e.contains("profile") && e.contains("belongs to uid 1000"),
        "{e}"
    );
    std::os::unix::fs::chown(&profile, Some(0), None).unwrap();
    Profile::load(&profile).unwrap();
}

#[test]
fn inline_psk_in_world_readable_profile_is_refused() {
    let dir = TempDir::new("inline");
    for mode in [0o644, 0o640, 0o604] {
        let path = dir.write("work.toml", GOOD, mode);
        let e = Profile::load(&path).unwrap_err();
        assert!(
            e.contains("auth.psk")
                && e.contains("psk_file")
                && e.contains("keyring")
                && e.contains("chmod 600"),
            "{mode:o}: {e}"
        );
        assert!(!e.contains("a-test-psk"), "{e}");
    }
    let path = dir.write("work.toml", GOOD, 0o600);
    Profile::load(&path).unwrap();
    // Without an inline PSK the profile may be world-readable.
    let psk = dir.write("psk", "file-secret-of-twenty-plus\n", 0o600);
    let path = dir.write("shared.toml", &with_psk_file(&psk), 0o644);
    let p = Profile::load(&path).unwrap();
    assert_eq!(p.initiator.psk.expose(), b"file-secret-of-twenty-plus");
    // Nobody but the owner may write one, though.
    for mode in [0o664, 0o646] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let e = Profile::load(&path).unwrap_err();
        assert!(e.contains("writable by group or others"), "{mode:o}: {e}");
    }
    // The gateway's inline PSKs follow the same rule.
    let gateway = dir.write(
        "gw.toml",
        &format!(
            "{GATEWAY_BASE}[[clients]]\nid = \"alice.test\"\npsk = \"alice-psk-not-a-secret\"\n"
        ),
        0o644,
    );
    let e = GatewayProfile::load(&gateway).unwrap_err();
    assert!(
        e.contains("clients[0].psk") && e.contains("chmod 600"),
        "{e}"
    );
}

#[test]
fn profile_without_remote_id_is_refused() {
    let text = GOOD.replace("remote_id = \"gw.test\"\n", "");
    let e = Profile::parse("t", &text).unwrap_err();
    assert!(
        e.starts_with("remote_id is missing") && e.contains("impersonate"),
        "{e}"
    );
    let dir = TempDir::new("noid");
    let path = dir.write("work.toml", &text, 0o600);
    let e = Profile::load(&path).unwrap_err();
    assert!(e.contains("work.toml: remote_id is missing"), "{e}");
    let e = Profile::parse("t", &GOOD.replace("\"gw.test\"", "\"\"")).unwrap_err();
    assert!(e.contains("remote_id is empty"), "{e}");
}

#[test]
fn short_psk_is_refused_unless_allow_weak_psk() {
    let short = "nineteen-characters";
    assert_eq!(short.len(), MIN_PSK_CHARS - 1);
    let weak = GOOD.replace("a-test-psk-not-a-secret", short);
    let e = Profile::parse("t", &weak).unwrap_err();
    assert!(
        e.contains("shorter than 20 characters") && e.contains("auth.allow_weak_psk = true"),
        "{e}"
    );
    assert!(!e.contains(short), "{e}");
    let allowed = weak.replace("[auth]\n", "[auth]\nallow_weak_psk = true\n");
    let p = Profile::parse("t", &allowed).unwrap();
    assert_eq!(p.initiator.psk.expose(), short.as_bytes());
    // Characters, not octets: 19 two-octet characters are still too short.
    let e = Profile::parse(
        "t",
        &GOOD.replace("a-test-psk-not-a-secret", &"é".repeat(19)),
    )
    .unwrap_err();
    assert!(e.contains("shorter than 20"), "{e}");
    Profile::parse(
        "t",
        &GOOD.replace("a-test-psk-not-a-secret", &"é".repeat(20)),
    )
    .unwrap();

    // The same after a psk_file is read (the newline does not count)...
    let dir = TempDir::new("short");
    let path = dir.write("psk", &format!("{short}\n"), 0o600);
    let e = Profile::parse("t", &with_psk_file(&path)).unwrap_err();
    assert!(e.contains("shorter than 20"), "{e}");
    let text = with_psk_file(&path).replace("[auth]\n", "[auth]\nallow_weak_psk = true\n");
    Profile::parse("t", &text).unwrap();

    // ...and after the keyring is read.
    let keyring = Keyring::mock();
    keyring
        .set_psk("client.test@198.18.0.1", short.as_bytes())
        .unwrap();
    let origin = Origin {
        path: "p",
        mode: 0o600,
    };
    let text = GOOD.replace("psk = \"a-test-psk-not-a-secret\"", "psk_keyring = true");
    let e = Profile::from_text("t".into(), &text, origin, || Ok(keyring.clone())).unwrap_err();
    assert!(e.contains("shorter than 20"), "{e}");
    let text = text.replace("[auth]\n", "[auth]\nallow_weak_psk = true\n");
    Profile::from_text("t".into(), &text, origin, || Ok(keyring.clone())).unwrap();

    // A gateway's group and per-client PSKs too.
    let e = GatewayProfile::parse(
        &GATEWAY_BASE.replace("[pool]", &format!("[auth]\npsk = \"{short}\"\n[pool]")),
    )
    .unwrap_err();
    assert!(e.contains("auth: the PSK is shorter than 20"), "{e}");
    let client = format!("[[clients]]\nid = \"alice.test\"\npsk = \"{short}\"\n");
    let e = GatewayProfile::parse(&format!("{GATEWAY_BASE}{client}")).unwrap_err();
    assert!(
        e.contains("clients[0]: the PSK is shorter than 20")
            && e.contains("clients[0].allow_weak_psk = true"),
        "{e}"
    );
    GatewayProfile::parse(&format!("{GATEWAY_BASE}{client}allow_weak_psk = true\n")).unwrap();
}

const GATEWAY_BASE: &str = r#"
local_id = "gw.test"
address = "10.99.0.1/24"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
"#;

#[test]
fn gateway_clients_get_their_own_psk() {
    let dir = TempDir::new("clients");
    let bob_psk = dir.write("bob.psk", "bob-psk-from-a-file-not-a-secret\n", 0o600);
    let text = format!(
        "{GATEWAY_BASE}[[clients]]\nid = \"alice@corp.test\"\npsk = \"alice-psk-not-a-secret\"\n\
         [[clients]]\nid = \"10.0.0.7\"\npsk_file = \"{}\"\n",
        bob_psk.display()
    );
    let path = dir.write("gw.toml", &text, 0o600);
    let g = GatewayProfile::load(&path).unwrap();
    let psks = &g.responder.client_psks;
    assert_eq!(psks.len(), 2);
    assert_eq!(
        psks[&IkeId::Rfc822("alice@corp.test".into())].expose(),
        b"alice-psk-not-a-secret"
    );
    assert_eq!(
        psks[&IkeId::Ipv4(Ipv4Addr::new(10, 0, 0, 7))].expose(),
        b"bob-psk-from-a-file-not-a-secret"
    );
    // No [auth]: no group key, so an IDi not listed has no key at all.
    assert!(g.responder.group_psk.is_none());

    // [auth] with [[clients]]: the group key is for everyone else.
    let both = text.replace(
        "[pool]",
        "[auth]\npsk = \"gateway-group-psk-not-a-secret\"\n[pool]",
    );
    let g = GatewayProfile::parse(&both).unwrap();
    assert_eq!(g.responder.client_psks.len(), 2);
    assert_eq!(
        g.responder.group_psk.as_ref().unwrap().expose(),
        b"gateway-group-psk-not-a-secret"
    );

    // Mistakes name the table.
    let e = GatewayProfile::parse(GATEWAY_BASE).unwrap_err();
    assert!(e.contains("no PSK") && e.contains("[[clients]]"), "{e}");
    let twice = format!(
        "{GATEWAY_BASE}[[clients]]\nid = \"a.test\"\npsk = \"alice-psk-not-a-secret\"\n\
         [[clients]]\nid = \"a.test\"\npsk = \"other-psk-not-a-secret\"\n"
    );
    let e = GatewayProfile::parse(&twice).unwrap_err();
    assert!(
        e.contains("clients[1].id = \"a.test\" is listed twice"),
        "{e}"
    );
    let e = GatewayProfile::parse(&format!("{GATEWAY_BASE}[[clients]]\nid = \"a.test\"\n"))
        .unwrap_err();
    assert!(e.contains("clients[0] (a.test): give exactly one"), "{e}");
    let e = GatewayProfile::parse(&format!(
        "{GATEWAY_BASE}[[clients]]\nid = \"a.test\"\npsk_keyring = true\n"
    ))
    .unwrap_err();
    assert!(e.contains("psk_keyring"), "{e}");
    let link = dir.0.join("link.psk");
    std::os::unix::fs::symlink(&bob_psk, &link).unwrap();
    let e = GatewayProfile::parse(&format!(
        "{GATEWAY_BASE}[[clients]]\nid = \"b.test\"\npsk_file = \"{}\"\n",
        link.display()
    ))
    .unwrap_err();
    assert!(
        e.contains("clients[0].psk_file") && e.contains("symbolic link"),
        "{e}"
    );
}

#[test]
fn psk_debug_output_is_redacted() {
    let secret = "a-test-psk-not-a-secret";
    let profile = Profile::parse("t", GOOD).unwrap();
    let shown = format!("{profile:?}");
    assert!(
        !shown.contains(secret) && !shown.contains("116, 101, 115, 116"),
        "{shown}"
    );
    let text = format!(
        "{GATEWAY_BASE}[auth]\npsk = \"{secret}\"\n[[clients]]\nid = \"a.test\"\n\
         psk = \"alice-psk-not-a-secret\"\n"
    );
    let gateway = GatewayProfile::parse(&text).unwrap();
    let shown = format!("{gateway:?}");
    assert!(
        !shown.contains(secret) && !shown.contains("alice-psk"),
        "{shown}"
    );
}

#[test]
fn gateway_profile_parses() {
    let g = GatewayProfile::parse(
        r#"
local_id = "gw.test"
address = "10.99.0.1/24"
dns = ["10.99.0.1"]
[auth]
psk = "gateway-group-psk-not-a-secret"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
"#,
    )
    .unwrap();
    assert_eq!(g.responder.policies.len(), 2);
    assert_eq!(g.address, (IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)), 24));
    assert!(GatewayProfile::parse("local_id = \"g\"\n").is_err());
}

#[test]
fn gateway_profile_takes_the_ike_timers_but_not_client_settings() {
    let base = r#"
local_id = "gw.test"
address = "10.99.0.1/24"
[auth]
psk = "gateway-group-psk-not-a-secret"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
[ike]
"#;
    let g = GatewayProfile::parse(&format!(
        "{base}rekey_time = \"1h\"\nchild_rekey_time = \"20m\"\ndpd_delay = 0\nfragment_size = 1400\n"
    ))
    .unwrap();
    assert_eq!(
        g.responder.ike_lifetime,
        Lifetime::new(Duration::from_secs(3600))
    );
    assert_eq!(
        g.responder.child_lifetime,
        Lifetime::new(Duration::from_secs(1200))
    );
    assert_eq!(g.responder.dpd_interval, None);
    assert_eq!(g.responder.fragment_size, 1400);
    let e = GatewayProfile::parse(&format!("{base}force_udp_encapsulation = true\n")).unwrap_err();
    assert!(e.contains("client setting"), "{e}");
    let e = GatewayProfile::parse(&format!("{base}rekey_time = \"1s\"\n")).unwrap_err();
    assert!(e.contains("ike.rekey_time"), "{e}");
}

#[test]
fn tunnelcrack_network_options_default_off_and_reach_the_configs() {
    let p = Profile::parse("t", GOOD).unwrap();
    assert!(!p.spec.network.block_lan);
    assert!(!p.initiator.accept_pushed_routes);
    assert!(!p.initiator.allow_public_virtual_ip);
    let p = Profile::parse(
        "t",
        &format!(
            "{GOOD}[network]\nblock_lan = true\naccept_pushed_routes = true\n\
             allow_public_virtual_ip = true\n"
        ),
    )
    .unwrap();
    assert!(p.spec.network.block_lan);
    assert!(p.initiator.accept_pushed_routes);
    assert!(p.initiator.allow_public_virtual_ip);
    let e = Profile::parse(
        "t",
        &format!("{GOOD}[network]\nfull_tunnel = false\nblock_lan = true\n"),
    )
    .unwrap_err();
    assert!(e.contains("block_lan"), "{e}");
}
