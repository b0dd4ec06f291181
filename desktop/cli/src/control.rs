//! `pqvpn up`'s control socket, `/run/pqvpn/NAME.sock` (root only): the daemon's protocol
//! (`pqvpn_control`, served by `daemon::serve_one`) for its one tunnel, so `pqvpn status`,
//! `pqvpn down`, scripts and the tray read one schema whether a tunnel runs under the daemon or
//! in the foreground. This file is the CLI's side: finding the socket and asking it.

use std::path::{Path, PathBuf};

use pqvpn_control::{Client, Reply, Request, TunnelStatus};

/// Where `pqvpn up`'s sockets live, next to the daemon's `control.sock`.
pub(crate) const RUN_DIR: &str = "/run/pqvpn";

pub(crate) fn socket_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.sock"))
}

/// Whether `pqvpn up` runs tunnel `name` (or exactly one tunnel, unnamed) and its socket lets
/// us in (it is root's: anyone else asks the daemon).
pub(crate) fn has_tunnel(name: Option<&str>) -> bool {
    find(Path::new(RUN_DIR), name)
        .is_ok_and(|path| std::os::unix::net::UnixStream::connect(path).is_ok())
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

/// One request to `pqvpn up`'s tunnel `name` (or the only one).
pub(crate) fn request(name: Option<&str>, request: &Request) -> Result<Reply, String> {
    let path = find(Path::new(RUN_DIR), name)?;
    let mut client = Client::connect(&path)
        .map_err(|e| format!("no tunnel answers at {} ({e})", path.display()))?;
    client.request(request).map_err(|e| e.to_string())
}

/// The status of `pqvpn up`'s tunnel `name`.
pub(crate) fn tunnel_status(name: Option<&str>) -> Result<TunnelStatus, String> {
    match request(name, &Request::Status { profile: None })? {
        Reply::Status(s) => Ok(s),
        other => Err(format!("the tunnel sent {other:?}, not a status")),
    }
}

/// `pqvpn status [--json]` of a tunnel of `pqvpn up`.
pub(crate) fn status(name: Option<&str>, json: bool) -> Result<(), String> {
    let s = tunnel_status(name)?;
    if json {
        println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
    } else {
        print!("{}", crate::client::describe(&s));
    }
    Ok(())
}

/// `pqvpn down`.
pub(crate) fn down(name: Option<&str>) -> Result<(), String> {
    request(name, &Request::Disconnect { profile: None }).map(|_| ())
}
