//! Requests and responses, one JSON object per line.
//!
//! Owns: the wire types and their versioning (`VERSION`; a field added
//! later is optional, so peers of nearby versions understand each other).
//! Must not touch: sockets (`client`, `server`), what a request does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::status::StatusDoc;
pub use crate::status::{Progress, Step};
use crate::timeline::StartSummary;

/// Bumped on any incompatible change. `ping` and `upgrade` keep their
/// shape across versions: a supervisor answers them whatever the client's
/// version, so an old supervisor can always be replaced.
pub const VERSION: u32 = 2;

/// This build's version, named in every mismatch.
pub const STACKCTL: &str = env!("CARGO_PKG_VERSION");

/// A request line: `{"v":2,"stackctl":"0.1.0","req":"start",…}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub v: u32,
    /// The client's stackctl version (absent from version 1 clients).
    #[serde(default)]
    pub stackctl: Option<String>,
    /// The client shows live progress (a terminal): send it `waiting`
    /// progress too. A client that does not say so never gets any (an
    /// older one would not know the step), and a supervisor that does not
    /// know the field ignores it: no version bump either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
    #[serde(flatten)]
    pub req: Request,
}

impl Envelope {
    /// `req` from this build.
    pub fn new(req: Request) -> Envelope {
        Envelope {
            v: VERSION,
            stackctl: Some(STACKCTL.to_string()),
            live: false,
            req,
        }
    }

    /// `req` from this build, for a client that shows live progress.
    pub fn live(req: Request) -> Envelope {
        Envelope {
            live: true,
            ..Envelope::new(req)
        }
    }
}

/// What the CLI asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "req", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Bring `names` (default all) up with their dependencies.
    Start {
        names: Vec<String>,
        #[serde(default)]
        scale: BTreeMap<String, u32>,
        /// `--update-env`: the caller's environment, for what it starts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<CallerEnv>,
    },
    /// Stop `names`; empty: everything, then the supervisor exits.
    Stop {
        names: Vec<String>,
        /// Stop what depends on `names` first.
        #[serde(default, skip_serializing_if = "is_false")]
        with_dependents: bool,
    },
    /// Stop then start; empty: the whole stack, tasks re-run. Env files
    /// are read again for what is restarted.
    Restart {
        names: Vec<String>,
        /// `--update-env`: the caller's environment, for what it restarts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<CallerEnv>,
    },
    Status {
        names: Vec<String>,
    },
    /// The status document of `names` now, then again whenever it changes
    /// (and once a second, for the clocks), until the client goes or the
    /// supervisor exits (then `done`).
    Watch {
        names: Vec<String>,
    },
    /// `count` is `N`, `+K` or `-K`.
    Scale {
        name: String,
        count: String,
    },
    /// Re-read the stack file and apply the difference; its plan (what
    /// changed and what is done, per process) is sent first, as an `info`
    /// progress carrying `plan`.
    Reload {
        /// Only send the plan; change nothing. Absent from older clients;
        /// a supervisor older than the field would ignore it and reload,
        /// so a client asks for it only of one whose `pong` says
        /// `dry_run` (see `cli::start`).
        #[serde(default, skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    /// Leave for the binary at `exe`: the anchor re-executes itself from
    /// it and launches it as the new supervisor; no process is touched.
    Upgrade {
        exe: std::path::PathBuf,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A caller's environment (`--update-env`). Its values are secrets: its
/// `Debug` shows only the names, and nothing logs it.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct CallerEnv(pub BTreeMap<String, String>);

impl CallerEnv {
    /// This process's environment.
    pub fn current() -> CallerEnv {
        CallerEnv(std::env::vars().collect())
    }
}

impl std::fmt::Debug for CallerEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What the supervisor answers: any number of progress lines, then `done`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Response {
    Progress(Progress),
    Status(StatusDoc),
    /// The answer to `ping`: who answers.
    Pong {
        stackctl: String,
        protocol: u32,
        pid: i32,
        #[serde(default)]
        anchor: Option<i32>,
        /// It knows `reload`'s `dry_run` (absent from older supervisors).
        #[serde(default, skip_serializing_if = "is_false")]
        dry_run: bool,
    },
    Done {
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
        /// A start that started something and came up: its total and
        /// critical chain (`start`'s last line). An older client ignores it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<StartSummary>,
    },
}

/// A failure as the CLI should show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// The exit code (SPEC "Exit codes").
    pub code: u8,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Shown after the headline (e.g. the last log lines between rulers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<crate::error::Error> for ErrorBody {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error;
        let code = e.exit_code();
        match e {
            Error::Usage { message, hint } | Error::LockHeld { message, hint } => ErrorBody {
                code,
                message,
                hint,
                detail: None,
            },
            Error::Failed {
                message,
                hint,
                detail,
            } => ErrorBody {
                code,
                message,
                hint,
                detail,
            },
            Error::Config(c) => ErrorBody {
                code,
                message: "the stack file is invalid".into(),
                hint: None,
                detail: Some(c.to_string()),
            },
            other => ErrorBody {
                code,
                message: other.to_string(),
                hint: None,
                detail: None,
            },
        }
    }
}

impl From<ErrorBody> for crate::error::Error {
    fn from(b: ErrorBody) -> Self {
        use crate::error::{exit, Error};
        match b.code {
            exit::USAGE => match b.detail {
                // A config error travels as its rendered diagnostics.
                Some(d) if b.message == "the stack file is invalid" => {
                    Error::Config(crate::config::ConfigError::Invalid {
                        rendered: d,
                        count: 1,
                    })
                }
                _ => Error::Usage {
                    message: b.message,
                    hint: b.hint,
                },
            },
            _ => Error::Failed {
                message: b.message,
                hint: b.hint,
                detail: b.detail,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_flat_json() {
        let e = Envelope {
            v: VERSION,
            stackctl: Some("9.9.9".into()),
            live: false,
            req: Request::Scale {
                name: "worker".into(),
                count: "+1".into(),
            },
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(
            s,
            r#"{"v":2,"stackctl":"9.9.9","req":"scale","name":"worker","count":"+1"}"#
        );
        assert_eq!(serde_json::from_str::<Envelope>(&s).unwrap(), e);
        // A version 1 client: no stackctl field.
        let ping: Envelope = serde_json::from_str(r#"{"v":1,"req":"ping"}"#).unwrap();
        assert_eq!(ping.req, Request::Ping);
        assert_eq!(ping.stackctl, None);
        assert!(!ping.live);
        let live =
            serde_json::to_string(&Envelope::live(Request::Reload { dry_run: false })).unwrap();
        assert!(live.contains(r#""live":true"#), "{live}");
    }

    #[test]
    fn a_caller_environment_travels_but_never_shows() {
        let env = CallerEnv([("TOKEN".to_string(), "s3cr3t".to_string())].into());
        let r = Request::Restart {
            names: vec!["api".into()],
            env: Some(env),
        };
        assert!(!format!("{r:?}").contains("s3cr3t"));
        let line = serde_json::to_string(&Envelope::new(r.clone())).unwrap();
        assert!(line.contains(r#""env":{"TOKEN":"s3cr3t"}"#), "{line}");
        assert_eq!(serde_json::from_str::<Envelope>(&line).unwrap().req, r);
        // Absent unless asked for; old lines still parse.
        let plain = Request::Stop {
            names: vec!["api".into()],
            with_dependents: false,
        };
        let line = serde_json::to_string(&Envelope::new(plain.clone())).unwrap();
        assert!(!line.contains("with_dependents"), "{line}");
        let old: Envelope =
            serde_json::from_str(r#"{"v":2,"req":"restart","names":["api"]}"#).unwrap();
        assert_eq!(
            old.req,
            Request::Restart {
                names: vec!["api".into()],
                env: None
            }
        );
    }

    #[test]
    fn a_dry_run_is_an_optional_field_and_a_plain_reload_is_as_before() {
        let plain = serde_json::to_string(&Request::Reload { dry_run: false }).unwrap();
        assert_eq!(plain, r#"{"req":"reload"}"#);
        let dry = serde_json::to_string(&Request::Reload { dry_run: true }).unwrap();
        assert_eq!(dry, r#"{"req":"reload","dry_run":true}"#);
        let old: Envelope = serde_json::from_str(r#"{"v":2,"req":"reload"}"#).unwrap();
        assert_eq!(old.req, Request::Reload { dry_run: false });
        // An older supervisor's pong: no dry run.
        let pong: Response =
            serde_json::from_str(r#"{"event":"pong","stackctl":"0.1.0","protocol":2,"pid":7}"#)
                .unwrap();
        assert!(matches!(pong, Response::Pong { dry_run: false, .. }));
    }

    #[test]
    fn a_plan_travels_in_an_info_progress_that_older_clients_read_as_a_line() {
        use crate::status::{PlanAction, PlanEntry, ReloadPlan};
        let plan = ReloadPlan {
            dry_run: false,
            processes: vec![PlanEntry {
                process: "api".into(),
                action: PlanAction::Restart,
                keys: vec!["command".into()],
                env: vec!["TOKEN".into()],
                size: None,
            }],
            unchanged: vec!["redis".into()],
        };
        let r = Response::Progress(Progress::plan(plan));
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            line.starts_with(
                r#"{"event":"progress","process":"stack","step":"info","message":"reload: restart api; 1 unchanged","plan":{"#
            ),
            "{line}"
        );
        assert!(line.contains(r#""action":"restart""#), "{line}");
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), r);
        // What an older client knows of it.
        #[derive(serde::Deserialize)]
        struct Old {
            process: String,
            message: String,
        }
        let old: Old = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (old.process.as_str(), old.message.as_str()),
            ("stack", "reload: restart api; 1 unchanged")
        );
        // Other progress lines carry no plan.
        let p = serde_json::to_string(&Progress::new("api", Step::Ready, "ready")).unwrap();
        assert!(!p.contains("plan"), "{p}");
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::Done {
            ok: false,
            error: Some(ErrorBody {
                code: 1,
                message: "api failed".into(),
                hint: None,
                detail: Some("log".into()),
            }),
            summary: None,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.starts_with(r#"{"event":"done""#), "{s}");
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
    }
}
