//! The `http` probe: GET a URL; 2xx and 3xx pass; redirects are not
//! followed (a login redirect still means the server answers).
//!
//! ureq is blocking, so each request runs on tokio's blocking pool with its
//! own overall deadline (connect, TLS, request and status line); the caller
//! bounds the whole check again. A check never reads the body; [`text`]
//! (a reading, such as an autoscaled pool's queue depth) reads at most
//! [`TEXT_LIMIT`] of it.
//!
//! Owns: the request, its deadline, what passes. Must not touch: what a
//! failure means; never puts a URL's userinfo or query in a reason
//! (`shown_url`).

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use super::{timed_out, ProbeFailure};

/// One agent for every probe: no redirects, no pooled connections (a probe
/// must see a fresh connect, not a kept-alive socket), no proxy from the
/// environment (probes talk to local services and public URLs directly).
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .redirects(0)
            .max_idle_connections(0)
            .user_agent(concat!("stackctl-probe/", env!("CARGO_PKG_VERSION")))
            .build()
    })
}

pub(super) async fn check(url: &str, timeout: Duration) -> Result<(), ProbeFailure> {
    let owned = url.to_string();
    let job = tokio::task::spawn_blocking(move || get(&owned, timeout));
    match job.await {
        Ok(r) => r,
        Err(e) => Err(ProbeFailure::new(format!(
            "http probe of {url} failed: {e}"
        ))),
    }
}

/// The most of a body [`text`] reads.
pub(super) const TEXT_LIMIT: u64 = 64 * 1024;

/// GETs `url` and returns its body (2xx only, at most [`TEXT_LIMIT`]).
pub(super) async fn text(url: &str, timeout: Duration) -> Result<String, ProbeFailure> {
    let owned = url.to_string();
    let job = tokio::task::spawn_blocking(move || get_text(&owned, timeout));
    match job.await {
        Ok(r) => r,
        Err(e) => Err(ProbeFailure::new(format!("GET {url} failed: {e}"))),
    }
}

fn get_text(url: &str, timeout: Duration) -> Result<String, ProbeFailure> {
    use std::io::Read;
    let resp = match agent().get(url).timeout(timeout).call() {
        Ok(resp) if (200..300).contains(&resp.status()) => resp,
        Ok(resp) => return Err(status_failure(resp.status(), url)),
        Err(ureq::Error::Status(code, _)) => return Err(status_failure(code, url)),
        Err(ureq::Error::Transport(t)) => return Err(transport_failure(&t, url, timeout)),
    };
    let mut body = String::new();
    resp.into_reader()
        .take(TEXT_LIMIT)
        .read_to_string(&mut body)
        .map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(timeout),
            io::ErrorKind::InvalidData => {
                ProbeFailure::new(format!("the answer of {url} is not UTF-8 text"))
            }
            _ => ProbeFailure::new(format!("reading the answer of {url}: {e}")),
        })?;
    Ok(body)
}

fn get(url: &str, timeout: Duration) -> Result<(), ProbeFailure> {
    match agent().get(url).timeout(timeout).call() {
        Ok(resp) if (200..400).contains(&resp.status()) => Ok(()),
        Ok(resp) => Err(status_failure(resp.status(), url)),
        Err(ureq::Error::Status(code, _)) => Err(status_failure(code, url)),
        Err(ureq::Error::Transport(t)) => Err(transport_failure(&t, url, timeout)),
    }
}

fn status_failure(code: u16, url: &str) -> ProbeFailure {
    ProbeFailure::new(format!("HTTP {code} from {url}")).briefly(code.to_string())
}

fn transport_failure(t: &ureq::Transport, url: &str, timeout: Duration) -> ProbeFailure {
    use ureq::ErrorKind as K;
    let target = t
        .url()
        .map(|u| match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            _ => u.to_string(),
        })
        .unwrap_or_else(|| url.to_string());
    if let Some(io) = io_cause(t) {
        match io.kind() {
            io::ErrorKind::ConnectionRefused => {
                return ProbeFailure::new(format!("connection refused by {target}"))
                    .briefly("refused")
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => return timed_out(timeout),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => {
                return ProbeFailure::new(format!(
                    "connection closed by {target} before a response"
                ))
                .briefly("closed before a response")
            }
            _ => {}
        }
    }
    match t.kind() {
        K::InvalidUrl | K::UnknownScheme => ProbeFailure::new(format!(
            "invalid URL {url:?}: {}",
            t.message().unwrap_or("")
        )),
        K::Dns => {
            ProbeFailure::new(format!("cannot resolve the host of {url}")).briefly("cannot resolve")
        }
        K::ConnectionFailed => match io_cause(t) {
            Some(io) => ProbeFailure::new(format!("cannot connect to {target}: {io}"))
                .briefly(io.to_string()),
            None => ProbeFailure::new(format!("cannot connect to {target}")),
        },
        K::BadStatus | K::BadHeader => {
            ProbeFailure::new(format!("not an HTTP response from {url}")).briefly("not HTTP")
        }
        _ => ProbeFailure::new(format!("{url}: {t}")),
    }
}

/// The I/O error under a transport error, if any (ureq wraps it once or twice).
fn io_cause(t: &ureq::Transport) -> Option<&io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            // An io::Error may itself wrap another io::Error (TLS, timeouts).
            if let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<io::Error>()) {
                return Some(inner);
            }
            return Some(io);
        }
        cur = e.source();
    }
    None
}
