//! The local control protocol: one JSON request line, one JSON response line, over a Unix
//! socket in a root-only directory. The CLI's `status`/`down` and the tray app are clients.
//!
//! The daemon reads at most [`MAX_REQUEST_LINE`] octets and waits at most [`REQUEST_TIMEOUT`]
//! for them (security review L2): a longer line, or a client that says nothing, gets a JSON
//! error reply and the connection is closed without acting on anything it sent. Each
//! connection is served by its own task, so one slow client never holds up the others.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pqvpn_core::driver::Status;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// Where control sockets live (mode 0700, root-owned).
pub(crate) const RUN_DIR: &str = "/run/pqvpn";

/// Longest request line the daemon reads, in octets, its newline included.
pub(crate) const MAX_REQUEST_LINE: usize = 4096;

/// How long the daemon waits for a client's request line (and then for its reply to be taken).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

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

fn error_reply(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Reads one request line of at most [`MAX_REQUEST_LINE`] octets (newline included; the end
/// of the stream also ends a line). The error is the reply's message.
async fn read_request(read: impl AsyncRead + Unpin) -> Result<String, String> {
    let limit = u64::try_from(MAX_REQUEST_LINE).unwrap_or(u64::MAX);
    let mut line = Vec::with_capacity(256);
    BufReader::new(read.take(limit))
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("Failed to read the request: {e}"))?;
    if line.len() >= MAX_REQUEST_LINE && line.last() != Some(&b'\n') {
        return Err(format!(
            "request line longer than {MAX_REQUEST_LINE} octets; nothing done"
        ));
    }
    String::from_utf8(line).map_err(|_| "the request is not UTF-8".to_owned())
}

async fn answer(
    stream: UnixStream,
    status: watch::Receiver<Status>,
    shutdown: watch::Sender<bool>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(read)).await {
        Ok(request) => request,
        Err(_) => Err(format!(
            "no request line within {} s; closing",
            REQUEST_TIMEOUT.as_secs()
        )),
    };
    let reply = match request
        .and_then(|line| serde_json::from_str::<Request>(&line).map_err(|e| e.to_string()))
    {
        Ok(Request::Status) => serde_json::to_string(&status.borrow().refreshed())
            .unwrap_or_else(|e| error_reply(&e.to_string())),
        Ok(Request::Down) => {
            let _ = shutdown.send(true);
            "{\"ok\":true}".into()
        }
        Err(e) => error_reply(&e),
    };
    // A client that does not take its reply is dropped as well.
    let send = async {
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\n").await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, send)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Whether `pqvpn up` runs tunnel `name` (or exactly one tunnel, unnamed).
pub(crate) fn has_tunnel(name: Option<&str>) -> bool {
    find(Path::new(RUN_DIR), name).is_ok_and(|path| path.exists())
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
                // The daemon's socket is not a tunnel of `pqvpn up`.
                .filter(|p| p.file_name().is_none_or(|n| n != "control.sock"))
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
    let mut state = serde_json::to_string(&s.state)
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    if s.state == pqvpn_core::driver::State::Reconnecting {
        state.push_str(&format!(" (attempt {})", s.attempt));
    }
    let mut out = format!(
        "state:     {}\ngateway:   {}\nmode:      {} ({safe})\nike:       {}, {}\nesp:       {}\n\
         addresses: {}\ndns:       {:?}\ntraffic:   {} B in, {} B out, up {} s\n",
        state,
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
    if s.reconnects > 0 {
        out.push_str(&format!("reconnects: {}\n", s.reconnects));
    }
    if let Some(e) = &s.last_error {
        let label = match s.state {
            pqvpn_core::driver::State::Reconnecting => "reason:   ",
            _ => "error:    ",
        };
        out.push_str(&format!("{label} {e}\n"));
    }
    out
}

/// `pqvpn down`.
pub(crate) async fn down(name: Option<&str>) -> Result<(), String> {
    request(Path::new(RUN_DIR), name, &Request::Down).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A control socket in a fresh directory, served on the current runtime.
    struct Served {
        dir: PathBuf,
        path: PathBuf,
        shutdown: watch::Receiver<bool>,
        _status: watch::Sender<Status>,
    }

    impl Served {
        fn start(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("pqvpn-control-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let (status_tx, status_rx) = watch::channel(Status {
                mode: "hybrid".into(),
                ..Status::default()
            });
            let (shutdown_tx, shutdown_rx) = watch::channel(false);
            serve(&dir, "t", status_rx, shutdown_tx).unwrap();
            Self {
                path: socket_path(&dir, "t"),
                dir,
                shutdown: shutdown_rx,
                _status: status_tx,
            }
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Reads what the daemon sends until it closes the connection. Closing with unread request
    /// octets resets the connection after the reply (a Unix socket's ECONNRESET); that counts
    /// as closed.
    async fn read_to_close(stream: &mut UnixStream) -> String {
        let mut reply = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{e}"),
            }
        }
        String::from_utf8(reply).unwrap()
    }

    #[tokio::test]
    async fn control_line_longer_than_4096_is_refused() {
        let served = Served::start("long");
        // A `down` request padded past the limit with JSON whitespace: nothing may act on it.
        let mut line = String::from("{\"cmd\":\"down\"}");
        line.push_str(&" ".repeat(MAX_REQUEST_LINE));
        line.push('\n');
        let mut stream = UnixStream::connect(&served.path).await.unwrap();
        // The daemon stops reading at the limit; the rest may or may not be taken.
        let _ = stream.write_all(line.as_bytes()).await;
        let reply = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut stream))
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        let error = v["error"].as_str().unwrap();
        assert!(error.contains("longer than 4096"), "{reply}");
        assert!(!*served.shutdown.borrow(), "an over-long `down` was obeyed");
        // At the limit exactly (newline included) the same request is served.
        let mut line = String::from("{\"cmd\":\"status\"}");
        line.push_str(&" ".repeat(MAX_REQUEST_LINE - line.len() - 1));
        assert_eq!(line.len() + 1, MAX_REQUEST_LINE);
        let reply = raw_request(&served.path, &line).await.unwrap();
        let s: Status = serde_json::from_str(&reply).unwrap();
        assert_eq!(s.mode, "hybrid");
    }

    #[tokio::test]
    async fn silent_control_client_is_dropped_and_others_served() {
        let served = Served::start("silent");
        let started = Instant::now();
        let mut silent = UnixStream::connect(&served.path).await.unwrap();
        // Others are answered while the silent client is connected.
        let reply = raw_request(&served.path, "{\"cmd\":\"status\"}")
            .await
            .unwrap();
        assert!(reply.contains("\"mode\":\"hybrid\""), "{reply}");
        assert!(
            started.elapsed() < REQUEST_TIMEOUT,
            "served only after the timeout"
        );
        // The silent one gets an error and is closed after the timeout, not kept for ever.
        let reply = tokio::time::timeout(
            REQUEST_TIMEOUT + Duration::from_secs(3),
            read_to_close(&mut silent),
        )
        .await
        .expect("the silent client was never dropped");
        assert!(started.elapsed() >= REQUEST_TIMEOUT);
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("no request line within 2 s"),
            "{reply}"
        );
        // The daemon still serves after dropping it.
        let reply = raw_request(&served.path, "{\"cmd\":\"status\"}")
            .await
            .unwrap();
        assert!(reply.contains("\"mode\":\"hybrid\""), "{reply}");
        assert!(!*served.shutdown.borrow());
    }

    #[tokio::test]
    async fn bad_requests_get_json_errors() {
        let served = Served::start("bad");
        for line in ["{\"cmd\":\"reboot\"}", "not json"] {
            let reply = raw_request(&served.path, line).await.unwrap();
            let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
            assert!(v["error"].is_string(), "{line}: {reply}");
        }
        let reply = raw_request(&served.path, "{\"cmd\":\"down\"}")
            .await
            .unwrap();
        assert_eq!(reply.trim(), "{\"ok\":true}");
        assert!(*served.shutdown.borrow());
    }
}
