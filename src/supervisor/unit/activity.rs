//! What an instance is doing right now, for the operator watching an
//! operation: the step of its attempt (`starting`, `pre_start …`, its gate,
//! `running` for a task, a restart's delay, a stop) and what that step
//! waits for, as the gate sees it (`http://127.0.0.1:8000/health → 503`,
//! `tcp 127.0.0.1:3000: refused`, `log /listening/ not seen yet`).
//!
//! A unit publishes it on a `watch` channel of its own, beside its status:
//! it changes when the step changes, or when what the gate sees changes
//! (an attempt that fails for the same reason as the one before changes
//! nothing); it is not kept with the anchor. `supervisor::live` turns it
//! into `waiting` progress, and adds the clock.
//!
//! Owns: [`Activity`], setting it, and the texts of what a gate sees.
//! Must not touch: the unit's status (`UnitStatus`), the process.

use std::time::{Duration, Instant};

use super::Unit;
use crate::config::ProbeKind;
use crate::probe::{self, ProbeFailure};

/// One step of an instance that is under way.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// What it waits for now, in a line.
    pub what: String,
    /// When the step began.
    pub since: Instant,
    /// How long the step may take (a gate's or a task's timeout, a stop's
    /// grace, a restart's delay).
    pub timeout: Option<Duration>,
}

impl Unit {
    /// A new step begins.
    pub(super) fn doing(&self, what: impl Into<String>, timeout: Option<Duration>) {
        let a = Activity {
            what: what.into(),
            since: Instant::now(),
            timeout,
        };
        self.activity.send_replace(Some(a));
    }

    /// The step goes on; what it waits for now is `what` (told only when
    /// that changed).
    pub(super) fn seeing(&self, what: String) {
        self.activity.send_if_modified(|a| match a {
            Some(a) if a.what != what => {
                a.what = what;
                true
            }
            _ => false,
        });
    }

    /// Nothing under way (it is ready, or at rest).
    pub(super) fn idle(&self) {
        self.activity.send_if_modified(|a| a.take().is_some());
    }
}

/// What a gate waits for before its first answer. `template` is the probe
/// as written, `probed` as expanded; `env` the instance's environment.
pub(super) fn gate_waiting(
    template: &ProbeKind,
    probed: &ProbeKind,
    env: &[(String, String)],
) -> String {
    match probed {
        ProbeKind::Http(url) => probe::shown_url(url),
        ProbeKind::Tcp(addr) => format!("tcp {addr}"),
        ProbeKind::Exec(_) => format!("exec `{}`", as_written(template, env)),
        ProbeKind::Log(re) => format!("log /{}/ not seen yet", re.as_str()),
        ProbeKind::Notify => "notify: no READY=1 yet".to_string(),
        ProbeKind::Alive(d) => format!("alive for {}", probe::fmt_duration(*d)),
    }
}

/// What a gate saw at its last attempt.
pub(super) fn gate_saw(
    template: &ProbeKind,
    probed: &ProbeKind,
    env: &[(String, String)],
    failure: &ProbeFailure,
) -> String {
    let brief = super::gate::redact(failure.brief(), template, env);
    match probed {
        ProbeKind::Http(url) => format!("{} → {brief}", probe::shown_url(url)),
        ProbeKind::Tcp(addr) => format!("tcp {addr}: {brief}"),
        ProbeKind::Exec(_) => format!("exec `{}` → {brief}", as_written(template, env)),
        _ => format!("{}: {brief}", gate_waiting(template, probed, env)),
    }
}

/// A notify gate with what the process said last (`STATUS=`).
pub(super) fn notify_said(status: &str) -> String {
    format!("notify: no READY=1 yet; STATUS={status}")
}

/// An `exec` probe's command as written in the stack file.
fn as_written(template: &ProbeKind, env: &[(String, String)]) -> String {
    match template {
        ProbeKind::Exec(cmd) => super::gate::redact(&cmd.to_string(), template, env),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CommandSpec;

    #[test]
    fn a_gate_says_what_it_sees_in_a_line() {
        let env = vec![
            ("PORT".to_string(), "8000".to_string()),
            ("TOKEN".to_string(), "s3cr3t".to_string()),
        ];
        let t = ProbeKind::Http("http://127.0.0.1:${PORT}/health?t=${TOKEN}".into());
        let p = ProbeKind::Http("http://127.0.0.1:8000/health?t=s3cr3t".into());
        let f =
            ProbeFailure::new("HTTP 503 from http://127.0.0.1:8000/health?t=s3cr3t").briefly("503");
        assert_eq!(
            gate_waiting(&t, &p, &env),
            "http://127.0.0.1:8000/health?***"
        );
        assert_eq!(
            gate_saw(&t, &p, &env, &f),
            "http://127.0.0.1:8000/health?*** → 503"
        );
        let t = ProbeKind::Tcp("127.0.0.1:${PORT}".into());
        let p = ProbeKind::Tcp("127.0.0.1:8000".into());
        let f = ProbeFailure::new("connection refused by 127.0.0.1:8000").briefly("refused");
        assert_eq!(gate_saw(&t, &p, &env, &f), "tcp 127.0.0.1:8000: refused");
        let t = ProbeKind::Exec(CommandSpec::Shell("pg_isready -p ${PORT}".into()));
        let p = ProbeKind::Exec(CommandSpec::Shell("pg_isready -p 8000".into()));
        let f = ProbeFailure::new("exited 2: no response").briefly("exited 2");
        assert_eq!(
            gate_saw(&t, &p, &env, &f),
            "exec `pg_isready -p ${PORT}` → exited 2"
        );
        let re = ProbeKind::Log(regex::Regex::new("listening").unwrap());
        assert_eq!(gate_waiting(&re, &re, &env), "log /listening/ not seen yet");
    }
}
