//! Profiles parse into specs; every mistake names its kind, key and line, and no PSK leaks.

use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use super::*;
use crate::crypto::SecretBytes;
use crate::ike::{Lifetime, Mode};
use crate::wire::{IkeId, KeyExchangeMethod, TrafficSelector};

const GOOD: &str = r#"gateway = "vpn.corp.test"
local_id = "alice@corp.test"
remote_id = "vpn.corp.test"
[auth]
psk = "a-test-psk-not-a-secret"
"#;

fn client_error(text: &str) -> ProfileError {
    ClientProfile::parse(text).unwrap_err()
}

#[test]
fn a_minimal_profile_is_hybrid_full_tunnel_and_resolves_nothing() {
    let p = ClientProfile::parse(GOOD).unwrap();
    assert_eq!(
        p.gateway,
        Endpoint {
            host: Host::Name("vpn.corp.test".into()),
            port: IKE_PORT,
        }
    );
    assert_eq!(p.mode, Mode::Hybrid);
    assert_eq!(p.mlkem, KeyExchangeMethod::MlKem768);
    assert_eq!(p.remote_id, IkeId::Fqdn("vpn.corp.test".into()));
    assert_eq!(p.keyring_user(), "alice@corp.test@vpn.corp.test");
    assert_eq!(
        p.psk.source,
        PskSource::Inline(SecretBytes::from_slice(b"a-test-psk-not-a-secret"))
    );
    assert!(p.network.full_tunnel && p.network.dns && !p.network.block_lan);
    assert_eq!(p.network.kill_switch, KillSwitch::Auto);
    assert!(p.network.kill_switch_on() && !p.network.allow_lan);
    assert_eq!(p.network.mtu, 1400);
    assert_eq!(p.ike, IkeSpec::default());
    assert!(p.force_udp_encapsulation);

    let config = p.initiator_config(SecretBytes::from_slice(b"from-the-front-end"));
    assert_eq!(config.policy, crate::ike::CryptoPolicy::hybrid(p.mlkem));
    assert_eq!(config.psk.expose(), b"from-the-front-end");
    assert_eq!(config.remote_id, Some(p.remote_id));
    assert_eq!(
        config.ts_r,
        vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()]
    );
}

#[test]
fn every_setting_reaches_the_initiator_config() {
    let text = format!(
        "{GOOD}[crypto]\nmlkem = \"ml-kem-1024\"\n[network]\nfull_tunnel = false\n\
         routes = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndns = false\nmtu = 1280\n\
         interface = \"corp0\"\naccept_pushed_routes = true\nallow_public_virtual_ip = true\n\
         [ike]\nforce_udp_encapsulation = false\nfragment_size = 1200\nrekey_time = \"2h\"\n\
         child_rekey_time = 900\ndpd_delay = \"5s\"\nretransmit_tries = 3\n\
         require_child_pfs = true\n"
    )
    .replace(
        "gateway = \"vpn.corp.test\"",
        "mode = \"pq-only\"\ngateway = \"[2001:db8::1]:4500\"",
    );
    let p = ClientProfile::parse(&text).unwrap();
    assert_eq!(p.mode, Mode::PqOnly);
    assert_eq!(p.gateway.to_string(), "[2001:db8::1]:4500");
    assert_eq!(
        p.network.routes,
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap()
        ]
    );
    assert_eq!(p.network.interface.as_deref(), Some("corp0"));
    let c = p.initiator_config(SecretBytes::from_slice(b"x"));
    assert_eq!(
        c.policy,
        crate::ike::CryptoPolicy::pq_only(KeyExchangeMethod::MlKem1024)
    );
    assert_eq!(c.ts_r.len(), 2);
    assert!(!c.force_udp_encapsulation);
    assert_eq!(c.fragment_size, 1200);
    assert_eq!(c.ike_lifetime, Lifetime::new(Duration::from_secs(7200)));
    assert_eq!(c.child_lifetime, Lifetime::new(Duration::from_secs(900)));
    assert_eq!(c.dpd_interval, Some(Duration::from_secs(5)));
    assert_eq!(c.retransmit.attempts, 3);
    assert!(c.require_child_pfs && c.accept_pushed_routes && c.allow_public_virtual_ip);
    let off = ClientProfile::parse(&format!("{GOOD}[ike]\ndpd_delay = 0\n")).unwrap();
    assert_eq!(off.ike.dpd_interval, None);
}

#[test]
fn kill_switch_follows_the_tunnel_kind_unless_set() {
    let spec = |network: &str| {
        ClientProfile::parse(&format!("{GOOD}[network]\n{network}\n"))
            .unwrap()
            .network
    };
    assert!(!spec("full_tunnel = false\nroutes = [\"10.0.0.0/8\"]").kill_switch_on());
    let always = spec("full_tunnel = false\nroutes = [\"10.0.0.0/8\"]\nkill_switch = \"always\"");
    assert!(always.kill_switch_on());
    assert_eq!(always.kill_switch.as_str(), "always");
    let off = spec("kill_switch = \"off\"");
    assert!(off.full_tunnel && !off.kill_switch_on());
    assert!(spec("allow_lan = true").allow_lan);
}

#[test]
fn mistakes_name_their_kind_key_and_line() {
    let cases: &[(&str, &str, ProfileErrorKind, Option<&str>, u32)] = &[
        (
            "[network]\nmtuu = 1400",
            "mtuu",
            ProfileErrorKind::Syntax,
            None,
            7,
        ),
        (
            "[network]\nmtu = 100",
            "576..=9000",
            ProfileErrorKind::Invalid,
            Some("network.mtu"),
            7,
        ),
        (
            "[network]\nmtu = 99999999999",
            "576",
            ProfileErrorKind::Invalid,
            Some("network.mtu"),
            7,
        ),
        (
            "[network]\nroutes = [\"10/8\"]",
            "10/8",
            ProfileErrorKind::Invalid,
            Some("network.routes"),
            7,
        ),
        (
            "[network]\nfull_tunnel = false\nblock_lan = true",
            "full_tunnel",
            ProfileErrorKind::Conflict,
            Some("network.block_lan"),
            8,
        ),
        (
            "[network]\nkill_switch = \"sometimes\"",
            "auto, always or off",
            ProfileErrorKind::Invalid,
            Some("network.kill_switch"),
            7,
        ),
        (
            "[network]\nblock_lan = true\nallow_lan = true",
            "contradicts",
            ProfileErrorKind::Conflict,
            Some("network.allow_lan"),
            8,
        ),
        (
            "[crypto]\nmlkem = \"ml-kem-512\"",
            "ml-kem-512",
            ProfileErrorKind::Invalid,
            Some("crypto.mlkem"),
            7,
        ),
        (
            "[ike]\nrekey_time = \"5s\"",
            "10s..=30d",
            ProfileErrorKind::Invalid,
            Some("ike.rekey_time"),
            7,
        ),
        (
            "[ike]\nrekey_time = \"31d\"",
            "10s..=30d",
            ProfileErrorKind::Invalid,
            Some("ike.rekey_time"),
            7,
        ),
        (
            "[ike]\nchild_rekey_time = \"1 fortnight\"",
            "duration",
            ProfileErrorKind::Invalid,
            Some("ike.child_rekey_time"),
            7,
        ),
        (
            "[ike]\ndpd_delay = \"2h\"",
            "1s..=1h",
            ProfileErrorKind::Invalid,
            Some("ike.dpd_delay"),
            7,
        ),
        (
            "[ike]\nrekey_time = \"99999999999999999999d\"",
            "duration",
            ProfileErrorKind::Invalid,
            Some("ike.rekey_time"),
            7,
        ),
        (
            "[ike]\nretransmit_tries = 0",
            "1..=10",
            ProfileErrorKind::Invalid,
            Some("ike.retransmit_tries"),
            7,
        ),
        (
            "[ike]\nretransmit_tries = 11",
            "1..=10",
            ProfileErrorKind::Invalid,
            Some("ike.retransmit_tries"),
            7,
        ),
        (
            "[ike]\nfragment_size = 100",
            "576..=9000",
            ProfileErrorKind::Invalid,
            Some("ike.fragment_size"),
            7,
        ),
    ];
    for &(tail, needle, kind, key, line) in cases {
        let e = client_error(&format!("{GOOD}{tail}\n"));
        assert_eq!(
            (e.kind(), e.key(), e.line()),
            (kind, key, Some(line)),
            "{tail}: {e}"
        );
        assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
        assert!(e.message().contains(needle), "{tail}: {e}");
    }
    let e = client_error(&format!("mode = \"quantum\"\n{GOOD}"));
    assert_eq!((e.key(), e.line()), (Some("mode"), Some(1)), "{e}");
    let e = client_error(&GOOD.replace("vpn.corp.test\"\nlocal", "vpn corp\"\nlocal"));
    assert_eq!((e.key(), e.line()), (Some("gateway"), Some(1)), "{e}");
    assert!(e.message().contains("vpn corp"), "{e}");
    let e = client_error("gateway = 5\n");
    assert_eq!(
        (e.kind(), e.line()),
        (ProfileErrorKind::Syntax, Some(1)),
        "{e}"
    );
    assert!(e.message().contains("gateway"), "{e}");
    let e = client_error(&GOOD.replace("alice@corp.test", ""));
    assert_eq!((e.key(), e.line()), (Some("local_id"), Some(2)), "{e}");
    let e = client_error(&GOOD.replace("gateway = \"vpn.corp.test\"\n", ""));
    assert_eq!(e.kind(), ProfileErrorKind::Syntax);
    assert!(e.message().contains("missing field `gateway`") && !e.message().contains(" (in "));
    let e = client_error("this is not toml");
    assert_eq!(e.kind(), ProfileErrorKind::Syntax);
}

#[test]
fn a_profile_without_remote_id_is_refused() {
    let e = client_error(&GOOD.replace("remote_id = \"vpn.corp.test\"\n", ""));
    assert_eq!(
        (e.kind(), e.key()),
        (ProfileErrorKind::Missing, Some("remote_id"))
    );
    assert!(e.message().contains("impersonate"), "{e}");
    let e = client_error(&GOOD.replace("remote_id = \"vpn.corp.test\"", "remote_id = \"\""));
    assert_eq!((e.key(), e.line()), (Some("remote_id"), Some(3)), "{e}");
}

#[test]
fn psk_sources_are_exclusive_and_never_quoted() {
    let secret = "a-test-psk-not-a-secret";
    let both = GOOD.replace("[auth]\n", "[auth]\npsk_file = \"/etc/pqvpn/work.psk\"\n");
    let e = client_error(&both);
    assert_eq!(
        (e.kind(), e.key(), e.line()),
        (ProfileErrorKind::Conflict, Some("auth"), Some(4))
    );
    assert!(!e.to_string().contains(secret), "{e}");
    let e = client_error(&GOOD.replace(&format!("psk = \"{secret}\""), "allow_weak_psk = true"));
    assert_eq!(e.kind(), ProfileErrorKind::Conflict, "{e}");
    let file = ClientProfile::parse(&GOOD.replace(
        &format!("psk = \"{secret}\""),
        "psk_file = \"/etc/pqvpn/work.psk\"",
    ))
    .unwrap();
    assert_eq!(
        file.psk.source,
        PskSource::File(PathBuf::from("/etc/pqvpn/work.psk"))
    );
    let keyring =
        ClientProfile::parse(&GOOD.replace(&format!("psk = \"{secret}\""), "psk_keyring = true"))
            .unwrap();
    assert_eq!(
        keyring.psk.source,
        PskSource::Keyring {
            user: "alice@corp.test@vpn.corp.test".into()
        }
    );
    let per_user = ClientProfile::parse(
        &GOOD.replace(&format!("psk = \"{secret}\""), "user_credentials = true"),
    )
    .unwrap();
    assert_eq!(
        per_user.psk.source,
        PskSource::PerUser {
            user: "alice@corp.test@vpn.corp.test".into()
        }
    );
    let e = client_error(&GOOD.replace(
        &format!("psk = \"{secret}\""),
        "user_credentials = true\npsk_keyring = true",
    ));
    assert!(e.message().contains("exactly one of"), "{e}");
    // Parse errors on the PSK's line quote neither the line nor the value.
    for bad in [
        "psk = 123456789012345678901",
        "psk = \"a-test-psk-not-a-secret\" trailing",
        "psk = \"a-test-psk-not-a-secret\\q\"",
        "psk = [\"a-test-psk-not-a-secret\"]",
    ] {
        let e = client_error(&GOOD.replace(&format!("psk = \"{secret}\""), bad));
        let shown = format!("{e} {e:?}");
        assert_eq!(e.line(), Some(5), "{bad}: {e}");
        assert!(
            !shown.contains("a-test-psk") && !shown.contains("12345678901"),
            "{bad}: {shown}"
        );
    }
    let e = client_error(&GOOD.replace(secret, ""));
    assert_eq!((e.key(), e.line()), (Some("auth.psk"), Some(5)), "{e}");
    let e = client_error(&GOOD.replace("[auth]\n", "[auth]\nmethod = \"eap\"\n"));
    assert_eq!(e.kind(), ProfileErrorKind::Unsupported, "{e}");
}

#[test]
fn a_short_inline_psk_is_refused_at_parse_unless_allowed() {
    let short = "nineteen-characters";
    assert_eq!(short.len(), MIN_PSK_CHARS - 1);
    let weak = GOOD.replace("a-test-psk-not-a-secret", short);
    let e = client_error(&weak);
    assert_eq!(
        (e.kind(), e.key(), e.line()),
        (ProfileErrorKind::WeakPsk, Some("auth"), Some(5))
    );
    assert!(e.message().contains("auth.allow_weak_psk = true") && !e.message().contains(short));
    let allowed =
        ClientProfile::parse(&weak.replace("[auth]\n", "[auth]\nallow_weak_psk = true\n")).unwrap();
    // A PSK read later is checked against the same spec.
    assert!(allowed.psk.allow_weak);
    let file = ClientProfile::parse(
        &GOOD.replace("psk = \"a-test-psk-not-a-secret\"", "psk_file = \"/p\""),
    )
    .unwrap();
    let e = file
        .psk
        .check(&SecretBytes::from_slice(short.as_bytes()))
        .unwrap_err();
    assert_eq!(e.kind(), ProfileErrorKind::WeakPsk);
    allowed
        .psk
        .check(&SecretBytes::from_slice(short.as_bytes()))
        .unwrap();
}

#[test]
fn debug_output_never_shows_a_psk() {
    let secret = "a-test-psk-not-a-secret";
    let shown = format!("{:?}", ClientProfile::parse(GOOD).unwrap());
    assert!(
        shown.contains("redacted") && !shown.contains(secret),
        "{shown}"
    );
    let gateway = GatewayProfile::parse(&format!(
        "{GATEWAY}[auth]\npsk = \"{secret}\"\n[[clients]]\nid = \"a.test\"\n\
         psk = \"alice-psk-not-a-secret\"\n"
    ))
    .unwrap();
    let shown = format!("{gateway:?}");
    assert!(
        !shown.contains(secret) && !shown.contains("alice-psk"),
        "{shown}"
    );
}

#[test]
fn oversized_profiles_are_refused_before_parsing() {
    let huge = format!("{GOOD}# {}\n", "x".repeat(MAX_PROFILE_LEN));
    assert_eq!(client_error(&huge).kind(), ProfileErrorKind::Invalid);
}

const GATEWAY: &str = r#"local_id = "gw.test"
address = "10.99.0.1/24"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
"#;

#[test]
fn a_gateway_profile_parses_into_a_responder_config() {
    let text = format!(
        "dns = [\"10.99.0.1\"]\nsubnets = [\"10.1.2.3/16\"]\nmodes = [\"pq-only\", \"hybrid\", \
         \"classical\"]\n{GATEWAY}[[clients]]\nid = \"alice@corp.test\"\n\
         psk = \"alice-psk-not-a-secret\"\n[[clients]]\nid = \"10.0.0.7\"\n\
         psk_file = \"/etc/pqvpn/bob.psk\"\n[ike]\nrekey_time = \"1h\"\ndpd_delay = 0\n"
    );
    let g = GatewayProfile::parse(&text).unwrap();
    assert_eq!(g.listen, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(g.modes, vec![Mode::PqOnly, Mode::Hybrid, Mode::Classical]);
    assert_eq!(g.address.to_string(), "10.99.0.1/24");
    assert_eq!(g.keyring_user(), "gw.test@0.0.0.0");
    assert!(g.group_psk.is_none());
    assert_eq!(
        g.clients[1].psk.source,
        PskSource::File("/etc/pqvpn/bob.psk".into())
    );
    let r = g.responder_config(
        None,
        vec![
            SecretBytes::from_slice(b"alice-psk-not-a-secret"),
            SecretBytes::from_slice(b"bob-psk-from-a-file"),
        ],
    );
    assert_eq!(r.policies.len(), 3);
    assert!(r.group_psk.is_none());
    assert_eq!(
        r.client_psks[&IkeId::Ipv4(Ipv4Addr::new(10, 0, 0, 7))].expose(),
        b"bob-psk-from-a-file"
    );
    assert_eq!(
        r.subnets_v4,
        vec![(Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(255, 255, 0, 0))]
    );
    assert_eq!(
        r.pool_v4,
        Some((Ipv4Addr::new(10, 99, 0, 10), Ipv4Addr::new(10, 99, 0, 20)))
    );
    assert_eq!(r.ike_lifetime, Lifetime::new(Duration::from_secs(3600)));
    assert_eq!(r.dpd_interval, None);
}

#[test]
fn gateway_mistakes_name_the_table() {
    let e = GatewayProfile::parse(GATEWAY).unwrap_err();
    assert_eq!(
        (e.kind(), e.key()),
        (ProfileErrorKind::Missing, Some("clients"))
    );
    let twice = format!(
        "{GATEWAY}[[clients]]\nid = \"a.test\"\npsk = \"alice-psk-not-a-secret\"\n\
         [[clients]]\nid = \"a.test\"\npsk = \"other-psk-not-a-secret\"\n"
    );
    let e = GatewayProfile::parse(&twice).unwrap_err();
    assert_eq!((e.key(), e.line()), (Some("clients[1].id"), Some(9)), "{e}");
    assert!(e.message().contains("listed twice"), "{e}");
    let e = GatewayProfile::parse(&format!("{GATEWAY}[[clients]]\nid = \"a.test\"\n")).unwrap_err();
    assert!(
        e.message()
            .contains("clients[0] (a.test): give exactly one"),
        "{e}"
    );
    let e = GatewayProfile::parse(&format!(
        "{GATEWAY}[[clients]]\nid = \"a.test\"\npsk_keyring = true\n"
    ))
    .unwrap_err();
    assert!(e.message().contains("psk_keyring"), "{e}");
    let e =
        GatewayProfile::parse(&format!("{GATEWAY}[auth]\nuser_credentials = true\n")).unwrap_err();
    assert_eq!(e.key(), Some("auth.user_credentials"), "{e}");
    assert!(e.message().contains("client profiles"), "{e}");
    let e = GatewayProfile::parse(&format!(
        "{GATEWAY}[[clients]]\nid = \"a.test\"\npsk = \"short\"\n"
    ))
    .unwrap_err();
    assert!(
        e.message().contains("clients[0].allow_weak_psk = true"),
        "{e}"
    );
    for (text, key) in [
        (
            GATEWAY.replace("10.99.0.10-10.99.0.20", "10.99.0.20-10.99.0.10"),
            "pool.ipv4",
        ),
        (
            GATEWAY.replace("10.99.0.10-10.99.0.20", "10.99.0.10"),
            "pool.ipv4",
        ),
        (GATEWAY.replace("10.99.0.1/24", "10.99.0.1/40"), "address"),
        (format!("listen = \"any\"\n{GATEWAY}"), "listen"),
        (format!("modes = []\n{GATEWAY}"), "modes"),
        (format!("modes = [\"fast\"]\n{GATEWAY}"), "modes"),
        (format!("mtu = 20\n{GATEWAY}"), "mtu"),
        (format!("dns = [\"dns.test\"]\n{GATEWAY}"), "dns"),
        (
            format!("{GATEWAY}[ike]\nforce_udp_encapsulation = true\n"),
            "ike.force_udp_encapsulation",
        ),
        (
            format!("{GATEWAY}[ike]\nrekey_time = \"1s\"\n"),
            "ike.rekey_time",
        ),
    ] {
        let text = format!("{text}[auth]\npsk = \"gateway-group-psk-not-a-secret\"\n");
        let e = GatewayProfile::parse(&text).unwrap_err();
        assert_eq!(e.key(), Some(key), "{text}: {e}");
        assert!(e.line().is_some(), "{e}");
    }
}
