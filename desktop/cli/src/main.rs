//! `pqvpn`: the post-quantum IPsec VPN client and its small gateway, on the command line.
//!
//! `up` runs a tunnel in the foreground; `status` and `down` talk to it over a root-only local
//! control socket (the tray app will speak the same protocol); `gateway` runs the project's own
//! responder; `demo` shows the whole thing on one machine.

mod client;
mod control;
mod daemon;
mod demo;
mod linux;
mod netns;
mod profile;
mod secret;
mod vault;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Post-quantum IPsec VPN (hybrid IKEv2 with ML-KEM).
#[derive(Debug, Parser)]
#[command(name = "pqvpn", version, about)]
struct Cli {
    /// More logging (-v: info, -vv: debug). Secrets are never logged.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// The daemon's control socket (default: $PQVPN_SOCKET, else /run/pqvpn/control.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect with PROFILE.toml and stay in the foreground until SIGINT/SIGTERM or `down`,
    /// reconnecting whenever the tunnel is lost (the routes stay meanwhile).
    Up {
        /// The profile.
        profile: PathBuf,
        /// End (non-zero) when the tunnel is lost instead of reconnecting.
        #[arg(long)]
        no_reconnect: bool,
    },
    /// Show a tunnel: one of `pqvpn up`'s, else the daemon's.
    Status {
        /// Profile name (file stem); the only tunnel by default.
        profile: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Keep printing changes (daemon tunnels).
        #[arg(long)]
        watch: bool,
    },
    /// Run the daemon: a supervised tunnel for each profile, controlled over its socket by
    /// root and group pqvpn.
    Daemon {
        /// The profiles (`*.toml`).
        #[arg(long, default_value = daemon::PROFILES_DIR, value_name = "DIR")]
        profiles: PathBuf,
        /// What users change (PQ-only switches), kept across restarts.
        #[arg(long, default_value = daemon::STATE_DIR, value_name = "DIR")]
        state: PathBuf,
        /// The group whose members may control tunnels.
        #[arg(long, default_value = pqvpn_control::CONTROL_GROUP)]
        group: String,
    },
    /// Connect a daemon profile.
    Connect {
        /// The profile's name.
        profile: String,
        /// Turn its PQ-only switch on first (ML-KEM alone; kept for later connects).
        #[arg(long)]
        pq_only: bool,
    },
    /// Disconnect a daemon tunnel.
    Disconnect {
        /// The profile's name; the only connected one by default.
        profile: Option<String>,
    },
    /// List the daemon's profiles.
    Profiles {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Set a daemon profile's PQ-only switch (a connected tunnel reconnects at once).
    PqOnly {
        /// The profile's name.
        profile: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        switch: String,
    },
    /// Disconnect the running tunnel.
    Down {
        /// Profile name (file stem); the only running tunnel by default.
        profile: Option<String>,
    },
    /// Undo what a run that crashed left: its routes and DNS at once; its kill switch, which
    /// keeps blocking traffic outside the tunnel (fail closed), only with --unblock.
    Recover {
        /// Also lift a kill switch left up (all traffic then leaves in clear again).
        #[arg(long)]
        unblock: bool,
    },
    /// Run the project's own gateway (responder) with GATEWAY.toml.
    Gateway {
        /// The gateway profile.
        config: PathBuf,
    },
    /// Store or delete a profile's PSK in the OS keyring (`[auth] psk_keyring = true`).
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Hand the daemon your own PSK for a profile with `user_credentials = true` (kept
    /// across reboots; used when you connect it), or delete it.
    Credential {
        #[command(subcommand)]
        action: CredentialAction,
    },
    /// Bring up a hybrid tunnel on this machine and measure it.
    Demo {
        /// Only the unprivileged part: handshake and ESP between two endpoints on loopback UDP.
        #[arg(long)]
        loopback: bool,
        /// Megabytes to move through the tunnel.
        #[arg(long, default_value_t = 32)]
        megabytes: u64,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    Man,
    /// (demo helper) Accept one TCP connection on ADDR and print the octets received.
    #[command(name = "__tcp-sink", hide = true)]
    TcpSink { addr: std::net::SocketAddr },
    /// (demo helper) Send BYTES to ADDR over TCP and print the seconds it took.
    #[command(name = "__tcp-source", hide = true)]
    TcpSource {
        addr: std::net::SocketAddr,
        bytes: u64,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialAction {
    /// Read your PSK from stdin (hidden on a terminal) and give it to the daemon for NAME.
    Set {
        /// The daemon profile's name.
        profile: String,
    },
    /// Make the daemon forget your PSK for NAME.
    Delete {
        /// The daemon profile's name.
        profile: String,
    },
}

#[derive(Debug, Subcommand)]
enum SecretAction {
    /// Read the PSK from stdin (hidden on a terminal) and store it for PROFILE.toml.
    Set {
        /// The client or gateway profile; its entry is `local_id@gateway` (or `@listen`).
        profile: PathBuf,
    },
    /// Delete the PSK stored for PROFILE.toml.
    Delete {
        /// The client or gateway profile.
        profile: PathBuf,
    },
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.command {
        Command::TcpSink { addr } => return finish(netns::tcp_sink(addr)),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "pqvpn", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            return finish(
                page.render(&mut std::io::stdout())
                    .map_err(|e| e.to_string()),
            );
        }
        Command::TcpSource { addr, bytes } => return finish(netns::tcp_source(addr, bytes)),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pqvpn: Failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up {
                profile,
                no_reconnect,
            } => linux::up(&profile, !no_reconnect).await,
            Command::Gateway { config } => linux::gateway(&config).await,
            Command::Recover { unblock } => linux::recover(unblock),
            Command::Status {
                profile,
                json,
                watch,
            } => {
                if !watch && cli.socket.is_none() && control::has_tunnel(profile.as_deref()) {
                    control::status(profile.as_deref(), json)
                } else {
                    client::status(&client::socket(cli.socket), profile, json, watch)
                }
            }
            Command::Daemon {
                profiles,
                state,
                group,
            } => {
                daemon::run(daemon::DaemonOptions {
                    profiles,
                    socket: client::socket(cli.socket),
                    state,
                    group,
                })
                .await
            }
            Command::Connect { profile, pq_only } => {
                client::connect(&client::socket(cli.socket), profile, pq_only)
            }
            Command::Disconnect { profile } => {
                client::disconnect(&client::socket(cli.socket), profile)
            }
            Command::Profiles { json } => client::profiles(&client::socket(cli.socket), json),
            Command::PqOnly { profile, switch } => {
                client::pq_only(&client::socket(cli.socket), profile, switch == "on")
            }
            Command::Down { profile } => control::down(profile.as_deref()),
            Command::Demo {
                loopback,
                megabytes,
            } => demo::run(loopback, megabytes).await,
            Command::Credential {
                action: CredentialAction::Set { profile },
            } => client::set_credential(&client::socket(cli.socket), profile).await,
            Command::Credential {
                action: CredentialAction::Delete { profile },
            } => client::delete_credential(&client::socket(cli.socket), profile),
            Command::Secret {
                action: SecretAction::Set { profile },
            } => secret::set(&profile).await,
            Command::Secret {
                action: SecretAction::Delete { profile },
            } => secret::delete(&profile),
            Command::TcpSink { .. }
            | Command::TcpSource { .. }
            | Command::Completions { .. }
            | Command::Man => Ok(()),
        }
    });
    finish(result)
}

fn finish(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pqvpn: {e}");
            ExitCode::FAILURE
        }
    }
}
