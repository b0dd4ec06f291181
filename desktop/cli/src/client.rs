//! The daemon's front end on the command line: `connect`, `disconnect`, `profiles`,
//! `pq-only`, and `status` of daemon tunnels, all through `pqvpn_control`.

use std::path::{Path, PathBuf};

use pqvpn_control::{Client, DEFAULT_SOCKET, Event, ProfileInfo, Reply, Request, TunnelStatus};

/// The daemon's socket: `--socket`, else `PQVPN_SOCKET`, else the default.
pub(crate) fn socket(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("PQVPN_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn request(socket: &Path, request: &Request) -> Result<Reply, String> {
    let mut client = Client::connect(socket).map_err(|e| e.to_string())?;
    client.request(request).map_err(|e| e.to_string())
}

/// `pqvpn connect NAME [--pq-only]`.
pub(crate) fn connect(socket: &Path, profile: String, pq_only: bool) -> Result<(), String> {
    let pq_only = pq_only.then_some(true);
    request(socket, &Request::Connect { profile, pq_only }).map(|_| ())
}

/// `pqvpn disconnect [NAME]`.
pub(crate) fn disconnect(socket: &Path, profile: Option<String>) -> Result<(), String> {
    request(socket, &Request::Disconnect { profile }).map(|_| ())
}

/// `pqvpn pq-only NAME on|off`.
pub(crate) fn pq_only(socket: &Path, profile: String, on: bool) -> Result<(), String> {
    request(socket, &Request::SetPqOnly { profile, on })?;
    eprintln!(
        "pqvpn: PQ-only {}; a connected tunnel reconnects in the new mode now",
        if on { "on" } else { "off" }
    );
    Ok(())
}

/// `pqvpn credential set NAME`: the PSK from stdin (hidden on a terminal), to the daemon over
/// its socket (never in argv or the environment).
pub(crate) async fn set_credential(socket: &Path, profile: String) -> Result<(), String> {
    use std::io::IsTerminal as _;
    let psk = if std::io::stdin().is_terminal() {
        crate::secret::read_hidden_twice(&profile).await?
    } else {
        crate::secret::read_psk_line(&mut std::io::stdin().lock())?
    };
    let text = std::str::from_utf8(psk.expose())
        .map_err(|_| "the PSK is not UTF-8 text".to_owned())?
        .to_owned();
    let secret = pqvpn_control::Secret::new(text);
    request(
        socket,
        &Request::SetCredential {
            profile: profile.clone(),
            secret,
        },
    )?;
    eprintln!("pqvpn: the daemon keeps your PSK for {profile}; `pqvpn connect {profile}` uses it");
    Ok(())
}

/// `pqvpn credential delete NAME`.
pub(crate) fn delete_credential(socket: &Path, profile: String) -> Result<(), String> {
    request(
        socket,
        &Request::DeleteCredential {
            profile: profile.clone(),
        },
    )?;
    eprintln!("pqvpn: the daemon forgot your PSK for {profile}");
    Ok(())
}

/// `pqvpn profiles [--json]`.
pub(crate) fn profiles(socket: &Path, json: bool) -> Result<(), String> {
    let Reply::Profiles(profiles) = request(socket, &Request::Profiles)? else {
        return Err("the daemon sent something else than profiles".into());
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&profiles).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    for ProfileInfo {
        name,
        gateway,
        mode,
        pq_only,
        state,
    } in profiles
    {
        let mode = serde_json::to_string(&mode).unwrap_or_default();
        let state = serde_json::to_string(&state).unwrap_or_default();
        println!(
            "{name:<16} {:<13} {:<9}{} {gateway}",
            state.trim_matches('"'),
            mode.trim_matches('"'),
            if pq_only { " pq-only" } else { "" }
        );
    }
    Ok(())
}

/// `pqvpn status [NAME] [--json] [--watch]` of a daemon tunnel.
pub(crate) fn status(
    socket: &Path,
    profile: Option<String>,
    json: bool,
    watch: bool,
) -> Result<(), String> {
    // A reader that goes away (`| head`) ends the watch quietly.
    let show = |s: &TunnelStatus| -> Result<bool, String> {
        use std::io::Write as _;
        let text = if json {
            format!("{}\n", serde_json::to_string(s).map_err(|e| e.to_string())?)
        } else {
            describe(s)
        };
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    };
    if !watch {
        let Reply::Status(s) = request(socket, &Request::Status { profile })? else {
            return Err("the daemon sent something else than a status".into());
        };
        return show(&s).map(|_| ());
    }
    let client = Client::connect(socket).map_err(|e| e.to_string())?;
    let mut last = None;
    for event in client.subscribe(profile).map_err(|e| e.to_string())? {
        // State changes and rekeys are also in the statuses that follow them.
        let Event::Status(s) = event.map_err(|e| e.to_string())? else {
            continue;
        };
        // Counters change every second; print on state changes unless --json.
        let key = (s.profile.clone(), s.state, s.attempt);
        if json || last.as_ref() != Some(&key) {
            if !show(&s)? {
                break;
            }
            last = Some(key);
        }
    }
    Ok(())
}

/// The human-readable status of a tunnel.
pub(crate) fn describe(s: &TunnelStatus) -> String {
    let state = serde_json::to_string(&s.state).unwrap_or_default();
    let mut state = state.trim_matches('"').to_owned();
    if s.state == pqvpn_control::State::Reconnecting {
        state.push_str(&format!(" (attempt {})", s.attempt));
    }
    let mode = s
        .mode
        .map(|m| serde_json::to_string(&m).unwrap_or_default())
        .unwrap_or_default();
    let safe = if s.quantum_safe {
        "quantum-safe"
    } else {
        "NOT quantum-safe"
    };
    let kes: Vec<&str> = s.key_exchanges.iter().map(|k| k.name()).collect();
    let name = |c: Option<pqvpn_control::Cipher>| c.map_or("-", pqvpn_control::Cipher::name);
    let mut out = format!(
        "profile:   {}\nstate:     {state}\nmode:      {} ({safe})\nike:       {}, {}, {}\n\
         esp:       {}\ngateway:   {}\naddresses: {}\ndns:       {}\n\
         traffic:   {} B in, {} B out, up {} s\n\
         rekeys:    {} Child SA, {} IKE SA, {} Child SA re-created\n",
        s.profile,
        mode.trim_matches('"'),
        if kes.is_empty() {
            "-".into()
        } else {
            kes.join(" + ")
        },
        name(s.ike_cipher),
        s.prf.map_or("-", pqvpn_control::Prf::name),
        name(s.esp_cipher),
        s.gateway,
        s.virtual_ips.join(", "),
        s.dns.join(", "),
        s.bytes_in,
        s.bytes_out,
        s.uptime_s,
        s.child_sa_rekeys,
        s.ike_sa_rekeys,
        s.child_sa_recreates
    );
    if let Some(ms) = s.handshake_ms {
        out.push_str(&format!("handshake: {ms:.1} ms\n"));
    }
    if s.reconnects > 0 {
        out.push_str(&format!("reconnects: {}\n", s.reconnects));
    }
    if s.kill_switch {
        out.push_str("kill switch: on (nothing leaves outside the tunnel)\n");
    }
    if let Some(reason) = &s.reason {
        let label = match s.state {
            pqvpn_control::State::Error => "error:    ",
            _ => "reason:   ",
        };
        out.push_str(&format!("{label} {reason}\n"));
    }
    out
}
