//! The client side of the control socket, used by the CLI.

use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::trust::{self, Reachable, Trust, Untrusted};
use super::{lines, ControlAnswer, ControlRequest, MAX_ANSWER_LINE};
use crate::base::door::{Reply, Status};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};

/// Why the CLI could not get an answer from the daemon.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// Nothing listens on the socket path (no file, or a stale one).
    #[error("no pagewire daemon answering on {} (is `pagewire serve` running? use --control PATH)", .path.display())]
    NoDaemon {
        /// The control socket path tried.
        path: PathBuf,
    },
    /// The socket, or the way to it, is not this user's alone: it may not
    /// be our daemon, so nothing is sent to it (see [`super::trust`]).
    #[error("refusing the control socket {}: {why}", .path.display())]
    Untrusted {
        /// The control socket path.
        path: PathBuf,
        /// What is wrong with it.
        why: Untrusted,
    },
    /// Connecting failed for another reason (permissions, not a socket...).
    #[error("cannot connect to the control socket {}: {source}", .path.display())]
    Connect {
        /// The control socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The connection broke while talking.
    #[error("lost the connection to the daemon: {0}")]
    Io(#[from] io::Error),
    /// The daemon closed the connection without answering (it stopped?).
    #[error("the daemon closed the connection without answering")]
    Closed,
    /// The daemon sent something this client does not understand.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// One connection to the daemon's control socket.
#[derive(Debug)]
pub(crate) struct Client {
    answers: FramedRead<OwnedReadHalf, AnyDelimiterCodec>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to the daemon listening on `path`, once the socket and its
    /// directories pass the [`trust`] rule.
    pub(crate) async fn connect(path: &Path) -> Result<Client, ClientError> {
        let no_daemon = || ClientError::NoDaemon {
            path: path.to_path_buf(),
        };
        let target = match trust::check_socket(path, Trust::for_socket(path)) {
            Ok(Reachable::Socket(target)) => target,
            Ok(Reachable::Missing | Reachable::NotASocket) => return Err(no_daemon()),
            Err(Untrusted::Inspect { source, .. }) => {
                return Err(ClientError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(why) => {
                return Err(ClientError::Untrusted {
                    path: path.to_path_buf(),
                    why,
                })
            }
        };
        let stream = UnixStream::connect(&target)
            .await
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NoDaemon {
                        path: path.to_path_buf(),
                    }
                }
                _ => ClientError::Connect {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let (reader, writer) = stream.into_split();
        Ok(Client {
            answers: lines(reader, MAX_ANSWER_LINE),
            writer,
        })
    }

    /// Runs one command line on the daemon and returns its reply.
    pub(crate) async fn run(&mut self, line: &str) -> Result<Reply, ClientError> {
        self.send(&ControlRequest::Command(line.to_owned())).await?;
        match self.next_answer().await? {
            Some(ControlAnswer::Done {
                ok: true, output, ..
            }) => Ok(Reply::ok(output)),
            Some(ControlAnswer::Done {
                ok: false,
                output,
                partial: true,
            }) => Ok(Reply::with(Status::Partial, output)),
            Some(ControlAnswer::Done {
                ok: false, output, ..
            }) => Ok(Reply::err(output)),
            Some(other) => Err(ClientError::Protocol(format!(
                "expected a reply, got {other:?}"
            ))),
            None => Err(ClientError::Closed),
        }
    }

    /// Turns this connection into a Monitor tail: `on_line` gets every line
    /// (and a note when lines were missed) until it returns
    /// [`ControlFlow::Break`] or the daemon closes the stream (shutdown),
    /// both of which end with `Ok`.
    pub(crate) async fn watch(
        mut self,
        request: ControlRequest,
        mut on_line: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        self.send(&request).await?;
        loop {
            let flow = match self.next_answer().await? {
                None => return Ok(()),
                Some(ControlAnswer::Line { line }) => on_line(&line),
                Some(ControlAnswer::Missed { missed }) => {
                    on_line(&crate::engine::monitor::missed_note(missed))
                }
                // The daemon refused the tail (e.g. too many connections).
                Some(ControlAnswer::Done {
                    ok: false, output, ..
                }) => return Err(ClientError::Protocol(output)),
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "expected a monitor line, got {other:?}"
                    )))
                }
            };
            if flow.is_break() {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, request: &ControlRequest) -> Result<(), ClientError> {
        self.writer
            .write_all(&request.to_json_line())
            .await
            .map_err(closed_or_io)
    }

    /// The next answer line, or `None` when the daemon closed the connection.
    async fn next_answer(&mut self) -> Result<Option<ControlAnswer>, ClientError> {
        match self.answers.next().await {
            None => Ok(None),
            Some(Err(AnyDelimiterCodecError::Io(e))) => Err(closed_or_io(e)),
            Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => Err(
                ClientError::Protocol(format!("an answer longer than {MAX_ANSWER_LINE} bytes")),
            ),
            Some(Ok(line)) => ControlAnswer::from_json(&line)
                .map(Some)
                .map_err(|e| ClientError::Protocol(e.to_string())),
        }
    }
}

/// A daemon that went away (it stopped, or dropped us) is [`ClientError::Closed`].
fn closed_or_io(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ClientError::Closed,
        _ => ClientError::Io(e),
    }
}

/// Connects, runs one command line, and returns the daemon's reply.
pub(crate) async fn run_command(path: &Path, line: &str) -> Result<Reply, ClientError> {
    Client::connect(path).await?.run(line).await
}

/// Connects and tails the Monitor (of every node of the cluster with
/// `cluster`); see [`Client::watch`].
pub(crate) async fn watch(
    path: &Path,
    cluster: bool,
    on_line: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<(), ClientError> {
    let request = if cluster {
        ControlRequest::ClusterMonitor
    } else {
        ControlRequest::Monitor
    };
    Client::connect(path).await?.watch(request, on_line).await
}
