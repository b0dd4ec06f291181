//! The local control protocol: one JSON request line, one JSON response line, over a Unix
//! socket in a root-only directory. The CLI's `status`/`down` and the tray app are clients.

use std::path::{Path, PathBuf};

use pqvpn_core::driver::Status;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// Where control sockets live (mode 0700, root-owned).
pub(crate) const RUN_DIR: &str = "/run/pqvpn";

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub(crate) enum Request {
    /// The current [`Status`].
    Status,
    /// Disconnect.
    Down,
}

pub(crate) fn socket_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.sock"))
}

/// Serves control requests for one tunnel until the listener is dropped.
pub(crate) fn serve(
    run_dir: &Path,
    name: &str,
    status: watch::Receiver<Status>,
    shutdown: watch::Sender<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run_dir)
        .map_err(|e| format!("Failed to create {}: {e}", run_dir.display()))?;
    let path = socket_path(run_dir, name);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "a tunnel named {name} is already running ({})",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("Failed to bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("Failed to restrict {}: {e}", path.display()))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let status = status.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _ = answer(stream, status, shutdown).await;
            });
        }
    }))
}

async fn answer(
    stream: UnixStream,
    status: watch::Receiver<Status>,
    shutdown: watch::Sender<bool>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => serde_json::to_string(&*status.borrow()),
        Ok(Request::Down) => {
            let _ = shutdown.send(true);
            Ok("{\"ok\":true}".into())
        }
        Err(e) => Ok(serde_json::json!({ "error": e.to_string() }).to_string()),
    }
    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await
}

/// Finds the socket of `name`, or of the only running tunnel.
fn find(run_dir: &Path, name: Option<&str>) -> Result<PathBuf, String> {
    if let Some(name) = name {
        return Ok(socket_path(run_dir, name));
    }
    let sockets: Vec<PathBuf> = std::fs::read_dir(run_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match sockets.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("no tunnel is running".into()),
        _ => Err("several tunnels are running; name one".into()),
    }
}

async fn request(run_dir: &Path, name: Option<&str>, request: &Request) -> Result<String, String> {
    let path = find(run_dir, name)?;
    let line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    raw_request(&path, &line).await
}

/// Sends one request line to the socket at `path` and returns the reply line.
pub(crate) async fn raw_request(path: &Path, line: &str) -> Result<String, String> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| format!("no tunnel answers at {} ({e})", path.display()))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    write.write_all(b"\n").await.map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(read)
        .read_line(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

/// `pqvpn status [--json]`.
pub(crate) async fn status(name: Option<&str>, json: bool) -> Result<(), String> {
    let reply = request(Path::new(RUN_DIR), name, &Request::Status).await?;
    if json {
        print!("{reply}");
        return Ok(());
    }
    let s: Status = serde_json::from_str(&reply).map_err(|e| format!("bad status reply: {e}"))?;
    print!("{}", describe(&s));
    Ok(())
}

/// `X25519 + ML-KEM-768`.
pub(crate) fn key_exchanges(s: &Status) -> String {
    let mut ke = s.ike.ke.clone();
    for a in &s.ike.addke {
        ke.push_str(" + ");
        ke.push_str(a);
    }
    ke
}

/// The human-readable status.
pub(crate) fn describe(s: &Status) -> String {
    let safe = if s.quantum_safe {
        "quantum-safe"
    } else {
        "NOT quantum-safe"
    };
    let state = serde_json::to_string(&s.state).unwrap_or_default();
    let mut out = format!(
        "state:     {}\ngateway:   {}\nmode:      {} ({safe})\nike:       {}, {}\nesp:       {}\n\
         addresses: {}\ndns:       {:?}\ntraffic:   {} B in, {} B out, up {} s\n",
        state.trim_matches('"'),
        s.gateway,
        s.mode,
        key_exchanges(s),
        s.ike.encr,
        s.esp.encr,
        s.virtual_ips.join(", "),
        s.dns,
        s.bytes_in,
        s.bytes_out,
        s.uptime_s
    );
    if let Some(e) = &s.last_error {
        out.push_str(&format!("error:     {e}\n"));
    }
    out
}

/// `pqvpn down`.
pub(crate) async fn down(name: Option<&str>) -> Result<(), String> {
    request(Path::new(RUN_DIR), name, &Request::Down).await?;
    Ok(())
}
