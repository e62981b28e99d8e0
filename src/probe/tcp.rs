//! The `tcp` probe: a TCP connect to `host:port` succeeds. The host may be
//! a name (`localhost`); every address it resolves to is tried in turn and
//! one that accepts is enough (`localhost` may resolve to `::1` first while
//! the service listens on 127.0.0.1 only).
//!
//! Owns: the connect and its deadline. Must not touch: what a failure
//! means.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{timed_out, ProbeFailure};

pub(super) async fn check(addr: &str, timeout: Duration) -> Result<(), ProbeFailure> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host(addr)).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Err(ProbeFailure::new(format!("cannot resolve {addr}: {e}"))
                    .briefly("cannot resolve"));
            }
            Err(_) => return Err(timed_out(timeout)),
        };
    let mut last: Option<(std::net::SocketAddr, io::Error)> = None;
    for a in &addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(a)).await {
            Ok(Ok(_stream)) => return Ok(()),
            Ok(Err(e)) => last = Some((*a, e)),
            Err(_) => return Err(timed_out(timeout)),
        }
    }
    Err(match last {
        Some((a, e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            ProbeFailure::new(format!("connection refused by {a}")).briefly("refused")
        }
        Some((a, e)) => {
            ProbeFailure::new(format!("cannot connect to {a}: {e}")).briefly(e.to_string())
        }
        None => ProbeFailure::new(format!("{addr} resolves to no address")),
    })
}
