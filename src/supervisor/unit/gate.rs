//! The readiness gate, notify messages, and what a message may show of a
//! probe: everything a unit waits on that is not its process.
//!
//! Owns: waiting for a gate (each probe kind), reading notify messages,
//! redacting a probe's failure, expanding a command's templates. Must not
//! touch: the process (the unit's).

use tokio::sync::{mpsc, oneshot};

use crate::config::{ProbeKind, ReadySpec};
use crate::probe::{self, NotifyMsg, NotifySocket, ProbeCtx};
use crate::spawn;

/// `text` (a probe's failure, a gate's description) as a message may show
/// it: the address actually probed (`http://127.0.0.1:21800/health`, not
/// `${API_PORT}`), with a URL's userinfo and query hidden
/// (`probe::shown_url`); every other value of a variable the probe's
/// `template` names put back as `${NAME}`: an `exec` probe's command
/// stays as written, and environment values never appear in a message, a
/// status or the log (SPEC; STYLE habit 5). Values shorter than 3 bytes
/// are left alone: they are no secret, and replacing them would garble
/// the text.
pub(super) fn redact(text: &str, template: &ProbeKind, env: &[(String, String)]) -> String {
    let lookup = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let expand = |t: &str| crate::config::env::expand(t, &lookup).unwrap_or_else(|_| t.to_string());
    let texts: Vec<&str> = match template {
        ProbeKind::Http(t) | ProbeKind::Tcp(t) => vec![t.as_str()],
        ProbeKind::Exec(crate::config::CommandSpec::Shell(t)) => vec![t.as_str()],
        ProbeKind::Exec(crate::config::CommandSpec::Argv(v)) => {
            v.iter().map(String::as_str).collect()
        }
        ProbeKind::Log(_) | ProbeKind::Notify | ProbeKind::Alive(_) => Vec::new(),
    };
    let mut out = text.to_string();
    // The target, shown as probed (a URL without its userinfo and query).
    let shown = match template {
        ProbeKind::Http(t) => {
            let probed = expand(t);
            let safe = probe::shown_url(&probed);
            out = out.replace(&probed, &safe);
            safe
        }
        ProbeKind::Tcp(t) => expand(t),
        _ => String::new(),
    };
    crate::config::env::redact_values(&out, &texts, env, &shown)
}

/// What a readiness gate needs besides the unit.
pub(super) struct Gate<'a> {
    /// The gate, its probe expanded.
    pub ready: &'a ReadySpec,
    /// Its probe as written (what messages may show of it: `redact`).
    pub template: &'a ProbeKind,
    pub ctx: &'a ProbeCtx,
    pub notify: Option<&'a NotifySocket>,
}

/// The readiness gate of a service: passes, or says why not. `matched`
/// resolves when the anchor saw a `log` gate's line; `said` gets each
/// `STATUS=` of a notify gate, `seen` what each failed attempt of a
/// polled gate saw (`activity::gate_saw`).
pub(super) async fn gate(
    g: &Gate<'_>,
    matched: Option<oneshot::Receiver<()>>,
    said: mpsc::UnboundedSender<String>,
    seen: mpsc::UnboundedSender<String>,
) -> Result<(), String> {
    let (kind, timeout) = (g.ready.probe.clone(), g.ready.timeout);
    let what = format!("readiness gate `{kind}`");
    match kind {
        ProbeKind::Alive(d) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        ProbeKind::Log(_) => {
            let Some(rx) = matched else {
                return Err(format!("{what}: no log watch"));
            };
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(format!("{what}: the anchor stopped watching its log")),
                Err(_) => Err(format!(
                    "{what} timed out after {}: no matching line",
                    humantime::format_duration(timeout)
                )),
            }
        }
        ProbeKind::Notify => {
            let Some(n) = g.notify else {
                return Err(format!("{what}: no notify socket"));
            };
            let wait = async {
                loop {
                    match n.recv().await {
                        Ok(msgs) => {
                            for m in &msgs {
                                if let NotifyMsg::Status(text) = m {
                                    let _ = said.send(text.clone());
                                }
                            }
                            if msgs.contains(&NotifyMsg::Ready) {
                                return Ok(());
                            }
                        }
                        Err(e) => return Err(format!("{what}: {e}")),
                    }
                }
            };
            tokio::time::timeout(timeout, wait)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "{what} timed out after {}: no READY=1 on NOTIFY_SOCKET",
                        humantime::format_duration(timeout)
                    ))
                })
        }
        ProbeKind::Http(_) | ProbeKind::Tcp(_) | ProbeKind::Exec(_) => {
            let observe = |f: &probe::ProbeFailure| {
                let _ = seen.send(super::activity::gate_saw(
                    g.template,
                    &g.ready.probe,
                    &g.ctx.env,
                    f,
                ));
            };
            probe::wait_ready_observed(g.ready, g.ctx, observe)
                .await
                .map_err(|f| format!("{what} failed: {f}"))
        }
    }
}

pub(super) async fn recv_notify(n: Option<&NotifySocket>) -> Vec<NotifyMsg> {
    match n {
        Some(n) => n.recv().await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}

/// A command's argv with `${VAR}` templates expanded from `env`.
pub fn expand_argv(cmd: &crate::config::CommandSpec, env: &[(String, String)]) -> Vec<String> {
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let expanded = match cmd {
        crate::config::CommandSpec::Shell(s) => crate::config::CommandSpec::Shell(
            crate::config::env::expand(s, &lookup).unwrap_or_else(|_| s.clone()),
        ),
        crate::config::CommandSpec::Argv(v) => crate::config::CommandSpec::Argv(
            v.iter()
                .map(|s| crate::config::env::expand(s, &lookup).unwrap_or_else(|_| s.clone()))
                .collect(),
        ),
    };
    spawn::argv(&expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_shows_the_probed_address_and_hides_the_rest() {
        let env = vec![
            ("PORT".to_string(), "18000".to_string()),
            ("TOKEN".to_string(), "s3cr3t".to_string()),
            ("OTHER".to_string(), "unrelated".to_string()),
            ("SHORT".to_string(), "1".to_string()),
            ("PW".to_string(), "hunter2".to_string()),
        ];
        let t = ProbeKind::Http("http://127.0.0.1:${PORT}/h?t=${TOKEN}&s=${SHORT:-x}".into());
        assert_eq!(
            redact(
                "HTTP 500 from http://127.0.0.1:18000/h?t=s3cr3t&s=1 (unrelated; s3cr3t)",
                &t,
                &env
            ),
            "HTTP 500 from http://127.0.0.1:18000/h?*** (unrelated; ${TOKEN})"
        );
        let t = ProbeKind::Http("http://me:${PW}@localhost:${PORT}/health".into());
        assert_eq!(
            redact(
                "connection refused by http://me:hunter2@localhost:18000/health",
                &t,
                &env
            ),
            "connection refused by http://***@localhost:18000/health"
        );
        let t = ProbeKind::Tcp("127.0.0.1:${PORT}".into());
        assert_eq!(
            redact("connection refused by 127.0.0.1:18000", &t, &env),
            "connection refused by 127.0.0.1:18000"
        );
        // An exec probe's command stays as written.
        let t = ProbeKind::Exec(crate::config::CommandSpec::Shell(
            "check --token ${TOKEN} --port ${PORT}".into(),
        ));
        assert_eq!(
            redact("exited 1: check --token s3cr3t --port 18000", &t, &env),
            "exited 1: check --token ${TOKEN} --port ${PORT}"
        );
    }
}
