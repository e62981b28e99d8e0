//! The supervisor side of the control socket: bind it safely, accept only
//! our user, and serve each connection — framing, the version check, and
//! dispatch to the [`Supervisor`], which implements what is dispatched.
//!
//! Owns: the wire (one JSON request line in; progress, status and one
//! `done` out). Must not touch: what an operation does (the supervisor's).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::protocol::{Envelope, ErrorBody, Request, Response, STACKCTL, VERSION};
use crate::error::Error;
use crate::status::{Progress, StatusDoc, Step};
use crate::supervisor::{ProgressTx, Supervisor};

/// Binds the control socket at `path` (mode 0600).
///
/// A socket file nobody listens on (a crashed supervisor's) is removed; a
/// socket somebody answers on means another supervisor runs (the caller
/// holds the single-supervisor flock, so that would be a bug: refused); any
/// other file type at the path is not ours to delete and is refused.
///
/// # Errors
/// As above, or when binding fails.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            let (addr, _dir) = super::socket_address(path)?;
            if std::os::unix::net::UnixStream::connect(&addr).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another supervisor answers on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it (move it away)",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bind with a umask that never lets the socket be reachable by others,
    // then set the mode explicitly.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = super::socket_address(path).and_then(|(addr, _dir)| UnixListener::bind(addr));
    nix::sys::stat::umask(old);
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Whether the peer on `stream` runs as our effective uid (`SO_PEERCRED`).
pub fn peer_is_us(stream: &UnixStream) -> bool {
    match stream.peer_cred() {
        Ok(c) => c.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

/// Serves one control connection: checks the peer, reads one request,
/// runs it against the supervisor while streaming its progress, and ends
/// with exactly one `done`.
///
/// # Cancel safety
/// A client that goes away (Ctrl-C) does not cancel the operation: it runs
/// in its own task to the end; only the writes to the client fail.
pub async fn serve_connection(sup: Arc<Supervisor>, stream: UnixStream) {
    if !peer_is_us(&stream) {
        tracing::warn!("refused a control connection from another user");
        return;
    }
    let (r, mut w) = stream.into_split();
    let (req, live) = match read_request(r).await {
        Some(Ok(env)) => (env.req, env.live),
        Some(Err(e)) => {
            let _ = write(&mut w, &done(Err(e))).await;
            return;
        }
        None => return,
    };
    if let Request::Watch { names } = req {
        watch_status(&sup, &names, &mut w).await;
        let _ = w.shutdown().await;
        return;
    }
    let is_shutdown = matches!(&req, Request::Stop { names, .. } if names.is_empty());
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let op = tokio::spawn(dispatch(sup, req, tx));
    while let Some(p) = rx.recv().await {
        if p.step == Step::Waiting && !live {
            continue;
        }
        // The client may be gone (Ctrl-C); the operation goes on regardless.
        let _ = write(&mut w, &Response::Progress(p)).await;
    }
    let result = op
        .await
        .unwrap_or_else(|e| Err(Error::failed(format!("internal error: {e}"))));
    let (result, summary) = match result {
        Ok(Some(Answer::Started(summary))) => (Ok(()), summary),
        Ok(Some(answer)) => {
            let _ = write(&mut w, &answer.into_response()).await;
            (Ok(()), None)
        }
        Ok(None) => (Ok(()), None),
        Err(e) => (Err(e), None),
    };
    let mut end = done(result);
    if let Response::Done { summary: s, .. } = &mut end {
        *s = summary;
    }
    let _ = write(&mut w, &end).await;
    let _ = w.shutdown().await;
    if is_shutdown {
        tracing::info!("stack stopped on request; supervisor exiting");
    }
}

/// `status --watch`: the document now, then on every change (changes
/// that come together, within 50 ms, are one), and once a second for the
/// clocks, until the client is gone (a write fails) or the supervisor
/// exits (`done`).
async fn watch_status(sup: &Supervisor, names: &[String], w: &mut OwnedWriteHalf) {
    let mut changes = sup.changes();
    let mut shutdown = sup.shutdown_requested();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        changes.borrow_and_update();
        let doc = match sup.status(names) {
            Ok(d) => d,
            Err(e) => {
                let _ = write(w, &done(Err(e))).await;
                return;
            }
        };
        if write(w, &Response::Status(doc)).await.is_err() {
            return;
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                let _ = write(w, &done(Ok(()))).await;
                return;
            }
        }
    }
}

/// The one request line of a connection (at most 1 MiB); `None` when the
/// client closed it without sending one.
async fn read_request(r: OwnedReadHalf) -> Option<Result<Envelope, Error>> {
    let mut r = BufReader::new(tokio::io::AsyncReadExt::take(r, 1 << 20));
    let mut line = String::new();
    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    Some(parse_request(&line))
}

/// A request line, checked for the protocol version. `ping` and `upgrade`
/// are answered whatever the version (see `protocol::VERSION`).
fn parse_request(line: &str) -> Result<Envelope, Error> {
    let env: Envelope =
        serde_json::from_str(line).map_err(|e| Error::usage(format!("bad request: {e}")))?;
    let timeless = matches!(env.req, Request::Ping | Request::Upgrade { .. });
    if env.v != VERSION && !timeless {
        let client = env.stackctl.as_deref().unwrap_or("older than 0.2");
        return Err(Error::Usage {
            message: format!(
                "this supervisor is stackctl {STACKCTL} (protocol v{VERSION}); the client is stackctl {client} (protocol v{})",
                env.v
            ),
            hint: Some(
                "use the binary the stack was started with, or `stackctl upgrade` with the new one (no process is restarted)".into(),
            ),
        });
    }
    Ok(env)
}

/// Runs `req` against the supervisor; `Some` is a status document to send
/// before `done`.
async fn dispatch(
    sup: Arc<Supervisor>,
    req: Request,
    tx: ProgressTx,
) -> Result<Option<Answer>, Error> {
    match req {
        Request::Ping => Ok(Some(Answer::Pong(sup.pong()))),
        Request::Upgrade { exe } => sup.upgrade(exe).await.map(|_| None),
        Request::Status { names } | Request::Watch { names } => {
            sup.status(&names).map(|d| Some(Answer::Status(d)))
        }
        // A start or restart waits for what a killed supervisor had under
        // way (its successor finishes it first).
        Request::Start { names, scale, env } => {
            sup.settled().await;
            sup.start_env(&names, &scale, env.map(|e| e.0), &tx)
                .await
                .map(|s| Some(Answer::Started(s)))
        }
        Request::Stop { names, .. } if names.is_empty() => sup.shutdown(&tx).await.map(|_| None),
        Request::Stop {
            names,
            with_dependents,
        } => sup
            .stop_with(&names, with_dependents, &tx)
            .await
            .map(|_| None),
        Request::Restart { names, env } => {
            sup.settled().await;
            sup.restart_env(&names, env.map(|e| e.0), &tx)
                .await
                .map(|_| None)
        }
        Request::Scale { name, count } => sup.scale(&name, &count, &tx).await.map(|_| None),
        Request::Reload { dry_run } => {
            sup.settled().await;
            sup.reload_with(dry_run, &tx).await.map(|_| None)
        }
    }
}

/// What an operation answers before `done`.
enum Answer {
    Status(StatusDoc),
    Pong(crate::supervisor::Pong),
    /// A start: what its `done` says of it.
    Started(Option<crate::timeline::StartSummary>),
}

impl Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Status(d) => Response::Status(d),
            Answer::Started(summary) => Response::Done {
                ok: true,
                error: None,
                summary,
            },
            Answer::Pong(p) => Response::Pong {
                stackctl: p.stackctl,
                protocol: VERSION,
                pid: p.pid,
                anchor: Some(p.anchor),
                dry_run: true,
            },
        }
    }
}

/// The `done` line for an outcome.
fn done(r: Result<(), Error>) -> Response {
    match r {
        Ok(()) => Response::Done {
            ok: true,
            error: None,
            summary: None,
        },
        Err(e) => Response::Done {
            ok: false,
            error: Some(ErrorBody::from(e)),
            summary: None,
        },
    }
}

async fn write(w: &mut OwnedWriteHalf, r: &Response) -> io::Result<()> {
    let mut s = serde_json::to_string(r).map_err(io::Error::other)?;
    s.push('\n');
    w.write_all(s.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_of_another_version_is_refused_naming_both() {
        let e =
            parse_request(r#"{"v":99,"stackctl":"9.0.0","req":"status","names":[]}"#).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("stackctl {STACKCTL} (protocol v{VERSION})"))
                && text.contains("stackctl 9.0.0 (protocol v99)"),
            "{text}"
        );
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        let old = parse_request(r#"{"v":1,"req":"stop","names":[]}"#).unwrap_err();
        assert!(old.to_string().contains("older than 0.2"), "{old}");
    }

    #[test]
    fn ping_and_upgrade_are_answered_whatever_the_version() {
        assert_eq!(
            parse_request(r#"{"v":99,"req":"ping"}"#).unwrap().req,
            Request::Ping
        );
        assert!(matches!(
            parse_request(r#"{"v":1,"req":"upgrade","exe":"/x"}"#)
                .unwrap()
                .req,
            Request::Upgrade { .. }
        ));
    }

    #[test]
    fn garbage_is_a_usage_error_not_a_panic() {
        let e = parse_request("{not json").unwrap_err();
        assert!(e.to_string().contains("bad request"), "{e}");
        assert_eq!(
            parse_request(r#"{"v":2,"req":"status","names":["api"]}"#)
                .unwrap()
                .req,
            Request::Status {
                names: vec!["api".into()]
            }
        );
    }

    #[test]
    fn done_carries_the_error_and_its_exit_code() {
        match done(Err(Error::failed("boom"))) {
            Response::Done {
                ok: false,
                error: Some(b),
                ..
            } => {
                assert_eq!(b.code, crate::error::exit::FAILURE);
                assert_eq!(b.message, "boom");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            done(Ok(())),
            Response::Done {
                ok: true,
                error: None,
                ..
            }
        ));
    }
}
