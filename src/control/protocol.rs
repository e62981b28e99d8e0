//! Requests and responses, one JSON object per line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::status::StatusDoc;
pub use crate::status::{Progress, Step};

/// Bumped on any incompatible change.
pub const VERSION: u32 = 1;

/// A request line: `{"v":1,"req":"start",…}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub req: Request,
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
    },
    /// Stop `names`; empty: everything, then the supervisor exits.
    Stop {
        names: Vec<String>,
    },
    /// Stop then start; empty: the whole stack, tasks re-run.
    Restart {
        names: Vec<String>,
    },
    Status {
        names: Vec<String>,
    },
    /// `count` is `N`, `+K` or `-K`.
    Scale {
        name: String,
        count: String,
    },
    /// Re-read the stack file and apply the difference.
    Reload,
}

/// What the supervisor answers: any number of progress lines, then `done`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Response {
    Progress(Progress),
    Status(StatusDoc),
    Done {
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
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
            req: Request::Scale {
                name: "worker".into(),
                count: "+1".into(),
            },
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"v":1,"req":"scale","name":"worker","count":"+1"}"#);
        assert_eq!(serde_json::from_str::<Envelope>(&s).unwrap(), e);
        let ping: Envelope = serde_json::from_str(r#"{"v":1,"req":"ping"}"#).unwrap();
        assert_eq!(ping.req, Request::Ping);
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
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.starts_with(r#"{"event":"done""#), "{s}");
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
    }
}
