//! A blocking client: connect, say hello, send requests, read replies and events.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::types::{ErrorCode, ErrorReply, Event, Reply, Request};
use crate::{MAX_REPLY_LINE, VERSION};

/// Why a request got no usable reply.
#[derive(Debug)]
pub enum ClientError {
    /// The daemon's socket could not be reached.
    Connect(std::io::Error),
    /// Reading or writing failed, or the daemon hung up.
    Io(std::io::Error),
    /// The daemon's line is not a reply of this protocol.
    BadReply(String),
    /// The daemon refused or failed.
    Daemon(ErrorReply),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) if e.kind() == std::io::ErrorKind::PermissionDenied => write!(
                f,
                "not allowed to talk to the pqvpn daemon ({e}): only root and members of \
                 group {} may control tunnels",
                crate::CONTROL_GROUP
            ),
            Self::Connect(e) => write!(
                f,
                "the pqvpn daemon does not answer ({e}); is pqvpn.service running?"
            ),
            Self::Io(e) => write!(f, "talking to the pqvpn daemon: {e}"),
            Self::BadReply(e) => write!(f, "the pqvpn daemon sent something unexpected: {e}"),
            Self::Daemon(e) => f.write_str(&e.message),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// The daemon's error code, when it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Daemon(e) => Some(e.code),
            _ => None,
        }
    }
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    read: BufReader<UnixStream>,
    write: UnixStream,
    daemon: String,
}

impl Client {
    /// Connects to the socket at `path` and exchanges [`Request::Hello`].
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(ClientError::Connect)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(ClientError::Io)?;
        let write = stream.try_clone().map_err(ClientError::Io)?;
        let mut client = Self {
            read: BufReader::new(stream),
            write,
            daemon: String::new(),
        };
        match client.request(&Request::Hello { version: VERSION })? {
            Reply::Hello { daemon, .. } => client.daemon = daemon,
            other => return Err(ClientError::BadReply(format!("{other:?}"))),
        }
        Ok(client)
    }

    /// The daemon's software version, from its hello.
    pub fn daemon(&self) -> &str {
        &self.daemon
    }

    /// Sends `request` and returns its reply; an error reply is [`ClientError::Daemon`].
    pub fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        // It may carry a credential: wiped once sent.
        let mut line = zeroize::Zeroizing::new(
            serde_json::to_string(request).map_err(|e| ClientError::BadReply(e.to_string()))?,
        );
        line.push('\n');
        self.write
            .write_all(line.as_bytes())
            .map_err(ClientError::Io)?;
        match serde_json::from_str::<Reply>(&self.read_line()?) {
            Ok(Reply::Error(e)) => Err(ClientError::Daemon(e)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(ClientError::BadReply(e.to_string())),
        }
    }

    /// Subscribes (to one profile, or all) and returns the events as they come, forever or
    /// until the daemon hangs up.
    pub fn subscribe(
        mut self,
        profile: Option<String>,
    ) -> Result<impl Iterator<Item = Result<Event, ClientError>>, ClientError> {
        match self.request(&Request::Subscribe { profile })? {
            Reply::Subscribed => {}
            other => return Err(ClientError::BadReply(format!("{other:?}"))),
        }
        self.read
            .get_ref()
            .set_read_timeout(None)
            .map_err(ClientError::Io)?;
        Ok(std::iter::from_fn(move || {
            let event = self.read_line().and_then(|line| {
                serde_json::from_str::<Event>(&line)
                    .map_err(|e| ClientError::BadReply(e.to_string()))
            });
            Some(event)
        }))
    }

    /// One line of at most [`MAX_REPLY_LINE`] octets.
    fn read_line(&mut self) -> Result<String, ClientError> {
        let limit = u64::try_from(MAX_REPLY_LINE).unwrap_or(u64::MAX);
        let mut line = Vec::new();
        (&mut self.read)
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(ClientError::Io)?;
        if line.is_empty() {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if line.last() != Some(&b'\n') {
            return Err(ClientError::BadReply(format!(
                "a line longer than {MAX_REPLY_LINE} octets"
            )));
        }
        String::from_utf8(line).map_err(|_| ClientError::BadReply("not UTF-8".into()))
    }
}
