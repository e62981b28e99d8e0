//! Probes: how to tell that a process is ready (gate) or alive (health).
//!
//! Owns: the polled checks (`http`, `tcp`, `exec`), the readiness loop over
//! them ([`wait_ready`]), the `NOTIFY_SOCKET` listener ([`NotifySocket`]),
//! and reading a short text answer over http ([`fetch_text`], an
//! autoscaled pool's queue depth); every failure carries a reason a person
//! can read ([`ProbeFailure`]), so `start` can say *why* a gate failed.
//! Must not touch: signalling, restarting or reaping processes; the status
//! table. A probe only observes; the supervisor decides what a failure means.
//!
//! Which kind is handled where:
//!
//! | kind | how the supervisor uses it |
//! | --- | --- |
//! | `http`, `tcp`, `exec` | [`expand`] once per instance, then [`check`] (health) or [`wait_ready`] (gate) |
//! | `log` | the anchor matches the regex against the process's lines as it writes its log, and says `Matched` (`crate::anchor`) |
//! | `notify` | a [`NotifySocket`] per instance: `NOTIFY_SOCKET` in the child's env, the gate awaits [`NotifyMsg::Ready`] from [`NotifySocket::recv`] |
//! | `alive` | the supervisor's own timer against the child's exit; nothing here |
//!
//! [`check`] and [`wait_ready`] refuse the last three with a clear
//! "not a polled probe" failure rather than guessing.
//!
//! Cancel safety: dropping any future here is safe. An `exec` probe's
//! command group is killed (see [`crate::spawn::run_oneshot`]); an `http`
//! request finishing on a blocking thread is bounded by its own timeout.

mod exec;
mod http;
mod notify;
mod tcp;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{CommandSpec, ProbeKind, ReadySpec};

pub use self::notify::{NotifyMsg, NotifySocket};

/// Why a probe did not pass: a short reason for a person, e.g.
/// "connection refused by 127.0.0.1:8000", "HTTP 503 from
/// http://127.0.0.1:8000/health", "exited 1: <last output line>",
/// "timed out after 2s".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    pub reason: String,
    /// The reason in a word or two, for a line that already names the
    /// target (`503`, `refused`, `timed out`, `exited 1`).
    brief: Option<String>,
}

impl ProbeFailure {
    pub(crate) fn new(reason: impl Into<String>) -> ProbeFailure {
        ProbeFailure {
            reason: reason.into(),
            brief: None,
        }
    }

    /// With a short form (see [`ProbeFailure::brief`]).
    pub(crate) fn briefly(mut self, brief: impl Into<String>) -> ProbeFailure {
        self.brief = Some(brief.into());
        self
    }

    /// The reason in a word or two when there is a short form (`503`,
    /// `refused`), else the whole reason.
    pub fn brief(&self) -> &str {
        self.brief.as_deref().unwrap_or(&self.reason)
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ProbeFailure {}

/// Where an `exec` probe runs: the process's working directory and its
/// complete environment (passed as is to [`crate::spawn::run_oneshot`],
/// which starts from an empty environment, so include `PATH`). `http` and
/// `tcp` probes ignore it.
#[derive(Debug, Clone, Default)]
pub struct ProbeCtx {
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

/// Whether [`check`] and [`wait_ready`] can run this kind (`http`, `tcp`,
/// `exec`); the others are events the supervisor waits for.
pub fn is_polled(kind: &ProbeKind) -> bool {
    matches!(
        kind,
        ProbeKind::Http(_) | ProbeKind::Tcp(_) | ProbeKind::Exec(_)
    )
}

/// Expands the `${VAR}` templates a probe holds (`http = "http://127.0.0.1:${API_PORT:-8000}/health"`,
/// an `exec` command) against `env`, the instance's complete environment,
/// the same way its command is expanded. Validation keeps the templates
/// because `STACKCTL_INSTANCE` differs per instance. Call this once per
/// instance; [`check`] and [`wait_ready`] take the probe as given (they do
/// not expand again, so a `$$` stays a literal `$`).
///
/// # Errors
/// A template that does not expand (validation makes this unlikely).
pub fn expand(kind: &ProbeKind, env: &[(String, String)]) -> Result<ProbeKind, ProbeFailure> {
    let lookup = |k: &str| {
        env.iter()
            .rev()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    };
    let one = |t: &str| {
        crate::config::expand(t, &lookup)
            .map_err(|e| ProbeFailure::new(format!("cannot expand probe `{kind}`: {e}")))
    };
    Ok(match kind {
        ProbeKind::Http(u) => ProbeKind::Http(one(u)?),
        ProbeKind::Tcp(a) => ProbeKind::Tcp(one(a)?),
        ProbeKind::Exec(CommandSpec::Shell(s)) => ProbeKind::Exec(CommandSpec::Shell(one(s)?)),
        ProbeKind::Exec(CommandSpec::Argv(v)) => ProbeKind::Exec(CommandSpec::Argv(
            v.iter().map(|a| one(a)).collect::<Result<_, _>>()?,
        )),
        ProbeKind::Log(_) | ProbeKind::Notify | ProbeKind::Alive(_) => kind.clone(),
    })
}

/// Runs one polled probe (already [`expand`]ed), cut off after `timeout`.
///
/// # Errors
/// Why it did not pass; for `log`, `notify` and `alive`, that they are not
/// polled probes.
pub async fn check(
    kind: &ProbeKind,
    ctx: &ProbeCtx,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    let attempt = async {
        match kind {
            ProbeKind::Http(url) => http::check(url, timeout).await,
            ProbeKind::Tcp(addr) => tcp::check(addr, timeout).await,
            ProbeKind::Exec(cmd) => exec::check(cmd, ctx, timeout).await,
            ProbeKind::Log(_) | ProbeKind::Notify | ProbeKind::Alive(_) => {
                Err(ProbeFailure::new(format!(
                    "`{}` is not a polled probe (the supervisor waits for it)",
                    kind.key()
                )))
            }
        }
    };
    // Each kind bounds itself; this is the backstop that makes the bound a
    // promise (a slow DNS lookup, a blocking thread pool that is busy).
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(timeout)),
    }
}

/// GETs `url` (already [`expand`]ed) and returns its body: a 2xx answer,
/// at most 64 KiB of UTF-8, within `timeout` in all. Redirects are not
/// followed.
///
/// # Errors
/// Why there is no body: the connection, the status, the deadline.
pub async fn fetch_text(url: &str, timeout: Duration) -> Result<String, ProbeFailure> {
    match tokio::time::timeout(timeout, http::text(url, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(timeout)),
    }
}

/// One attempt of a readiness gate is cut off after at most this long (and
/// never after the gate's deadline), so one hanging attempt cannot use up a
/// long gate such as the API's 120 s.
pub const MAX_ATTEMPT: Duration = Duration::from_secs(10);

/// Runs a polled readiness gate (probe already [`expand`]ed): an attempt every `spec.interval` (the next
/// one starts `interval` after the previous one started, or at once when an
/// attempt took longer) until one passes or `spec.timeout` has elapsed.
/// Every attempt is bounded so that the whole call ends by the deadline.
///
/// # Errors
/// The last attempt's reason and how long it waited; or, for a kind that is
/// not polled, that at once.
pub async fn wait_ready(spec: &ReadySpec, ctx: &ProbeCtx) -> Result<(), ProbeFailure> {
    wait_ready_observed(spec, ctx, |_| {}).await
}

/// [`wait_ready`], telling `seen` why each attempt that failed did not
/// pass, as it happens (what `start` shows while it waits).
///
/// # Errors
/// As [`wait_ready`].
pub async fn wait_ready_observed(
    spec: &ReadySpec,
    ctx: &ProbeCtx,
    mut seen: impl FnMut(&ProbeFailure),
) -> Result<(), ProbeFailure> {
    if !is_polled(&spec.probe) {
        return check(&spec.probe, ctx, spec.timeout).await;
    }
    let deadline = Instant::now() + spec.timeout;
    let mut attempts: u32 = 0;
    let mut last = ProbeFailure::new("no attempt was made");
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let full = MAX_ATTEMPT.max(spec.interval);
        let bound = (deadline - now).min(full);
        attempts += 1;
        match check(&spec.probe, ctx, bound).await {
            Ok(()) => return Ok(()),
            // An attempt the deadline cut short says less than the full
            // attempt before it ("timed out after 3ms" vs "exited 1: …").
            Err(e) if bound < full && attempts > 1 && e == timed_out(bound) => {}
            Err(e) => {
                seen(&e);
                last = e;
            }
        }
        let next = now + spec.interval;
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    Err(ProbeFailure::new(format!(
        "not ready after {} ({} attempt{}): {}",
        fmt_duration(spec.timeout),
        attempts,
        if attempts == 1 { "" } else { "s" },
        last.reason
    )))
}

/// A URL as a message may show it: what was probed (scheme, host, port,
/// path), with any userinfo and query (and fragment) replaced by `***`, as
/// they may carry a password or a token: `http://u:pw@h:1/p?t=x` →
/// `http://***@h:1/p?***`. Text that is not a URL is returned as is.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (before_frag, frag) = match rest.split_once('#') {
        Some((a, _)) => (a, true),
        None => (rest, false),
    };
    let (before_query, query) = match before_frag.split_once('?') {
        Some((a, _)) => (a, true),
        None => (before_frag, false),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let mut out = format!("{scheme}://{host}{path}");
    if query {
        out.push_str("?***");
    }
    if frag {
        out.push_str("#***");
    }
    out
}

/// What an (expanded) polled probe targets, as a message may show it: an
/// `http` probe's URL through [`shown_url`], a `tcp` probe's address.
/// `None` for the other kinds (an `exec` probe is shown as written, never
/// expanded: its command may hold a secret).
pub fn target_shown(kind: &ProbeKind) -> Option<String> {
    match kind {
        ProbeKind::Http(url) => Some(shown_url(url)),
        ProbeKind::Tcp(addr) => Some(addr.clone()),
        _ => None,
    }
}

pub(crate) fn timed_out(after: Duration) -> ProbeFailure {
    ProbeFailure::new(format!("timed out after {}", fmt_duration(after))).briefly("timed out")
}

/// A duration as a person writes it: "2s", "500ms", "1m 30s" (rounded to
/// milliseconds so measured times do not print nanoseconds).
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(ms).to_string()
}

#[cfg(test)]
mod test_http;

#[cfg(test)]
mod tests {
    use super::test_http::{Behaviour, Server};
    use super::*;

    /// Every test finishes or fails within this.
    const DEADLINE: Duration = Duration::from_secs(20);

    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(DEADLINE, f)
            .await
            .expect("test deadline passed")
    }

    fn ctx() -> ProbeCtx {
        ProbeCtx {
            cwd: PathBuf::from("/"),
            env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
        }
    }

    fn ready(probe: ProbeKind, timeout_ms: u64, interval_ms: u64) -> ReadySpec {
        ReadySpec {
            probe,
            timeout: Duration::from_millis(timeout_ms),
            interval: Duration::from_millis(interval_ms),
        }
    }

    #[test]
    fn a_shown_url_keeps_where_and_hides_userinfo_and_query() {
        let cases = [
            (
                "http://127.0.0.1:21800/health",
                "http://127.0.0.1:21800/health",
            ),
            ("http://u:pw@h:1/p?t=x", "http://***@h:1/p?***"),
            ("https://h/p?token=s3cr3t#frag", "https://h/p?***#***"),
            ("http://user@h", "http://***@h"),
            ("http://h:8000", "http://h:8000"),
            ("http://h/a@b", "http://h/a@b"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(shown_url(url), want, "{url}");
        }
        assert_eq!(
            target_shown(&ProbeKind::Tcp("127.0.0.1:3000".into())).as_deref(),
            Some("127.0.0.1:3000")
        );
        assert_eq!(target_shown(&ProbeKind::Notify), None);
    }

    #[tokio::test]
    async fn http_200_passes() {
        let s = Server::start(Behaviour::Status(200));
        within(check(
            &ProbeKind::Http(s.url("/health")),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn http_503_fails_with_status_and_url() {
        let s = Server::start(Behaviour::Status(503));
        let url = s.url("/health");
        let e = within(check(
            &ProbeKind::Http(url.clone()),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
        assert_eq!(e.reason, format!("HTTP 503 from {url}"));
    }

    #[tokio::test]
    async fn http_302_passes_without_following() {
        // The redirect target answers 503: following it would fail.
        let s = Server::start(Behaviour::Redirect);
        within(check(
            &ProbeKind::Http(s.url("/")),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
        assert_eq!(s.requests(), 1, "the redirect must not be followed");
    }

    #[tokio::test]
    async fn http_hanging_server_is_cut_off() {
        let s = Server::start(Behaviour::Hang);
        let t0 = std::time::Instant::now();
        let e = within(check(
            &ProbeKind::Http(s.url("/")),
            &ctx(),
            Duration::from_millis(300),
        ))
        .await
        .unwrap_err();
        assert!(e.reason.contains("timed out after"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn http_refused_says_so() {
        let port = free_port();
        let e = within(check(
            &ProbeKind::Http(format!("http://127.0.0.1:{port}/health")),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
        assert!(e.reason.contains("connection refused"), "{e}");
    }

    #[tokio::test]
    async fn http_bad_url_is_a_failure_not_a_panic() {
        let e = within(check(
            &ProbeKind::Http("not a url".into()),
            &ctx(),
            Duration::from_secs(1),
        ))
        .await
        .unwrap_err();
        assert!(e.reason.contains("not a url"), "{e}");
    }

    #[tokio::test]
    async fn tcp_listener_passes_and_closed_port_fails() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        within(check(
            &ProbeKind::Tcp(addr.to_string()),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
        within(check(
            &ProbeKind::Tcp(format!("localhost:{}", addr.port())),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
        drop(l);
        let e = within(check(
            &ProbeKind::Tcp(addr.to_string()),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
        assert_eq!(e.reason, format!("connection refused by {addr}"));
    }

    #[tokio::test]
    async fn tcp_bad_address_fails() {
        let e = within(check(
            &ProbeKind::Tcp("no-port-here".into()),
            &ctx(),
            Duration::from_secs(2),
        ))
        .await
        .unwrap_err();
        assert!(e.reason.contains("no-port-here"), "{e}");
    }

    #[tokio::test]
    async fn exec_exit_0_passes() {
        within(check(
            &ProbeKind::Exec(CommandSpec::Shell("true".into())),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn exec_exit_1_reports_code_and_last_line() {
        let e = within(check(
            &ProbeKind::Exec(CommandSpec::Shell("exit 1".into())),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
        assert_eq!(e.reason, "exited 1");
        let e = within(check(
            &ProbeKind::Exec(CommandSpec::Shell(
                "echo starting; echo 'db not up' >&2; echo; exit 2".into(),
            )),
            &ctx(),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
        assert_eq!(e.reason, "exited 2: db not up");
    }

    #[tokio::test]
    async fn exec_runs_in_cwd_with_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), "x").unwrap();
        let mut c = ctx();
        c.cwd = dir.path().to_path_buf();
        c.env.push(("PROBE_WANT".into(), "yes".into()));
        within(check(
            &ProbeKind::Exec(CommandSpec::Shell(
                "test -f marker && test \"$PROBE_WANT\" = yes".into(),
            )),
            &c,
            Duration::from_secs(5),
        ))
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn exec_timeout_and_missing_program() {
        let t0 = std::time::Instant::now();
        let e = within(check(
            &ProbeKind::Exec(CommandSpec::Argv(vec!["sleep".into(), "30".into()])),
            &ctx(),
            Duration::from_millis(200),
        ))
        .await
        .unwrap_err();
        assert_eq!(e.reason, "timed out after 200ms");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let e = within(check(
            &ProbeKind::Exec(CommandSpec::Argv(vec!["/nonexistent/probe-cmd".into()])),
            &ctx(),
            Duration::from_secs(2),
        ))
        .await
        .unwrap_err();
        assert!(e.reason.contains("/nonexistent/probe-cmd"), "{e}");
    }

    #[tokio::test]
    async fn non_polled_kinds_are_refused() {
        for k in [
            ProbeKind::Notify,
            ProbeKind::Alive(Duration::from_secs(1)),
            ProbeKind::Log(regex::Regex::new("x").unwrap()),
        ] {
            assert!(!is_polled(&k));
            let e = within(check(&k, &ctx(), Duration::from_secs(1)))
                .await
                .unwrap_err();
            assert!(e.reason.contains("not a polled probe"), "{e}");
            let e = within(wait_ready(&ready(k, 1000, 10), &ctx()))
                .await
                .unwrap_err();
            assert!(e.reason.contains("not a polled probe"), "{e}");
        }
    }

    #[tokio::test]
    async fn wait_ready_retries_until_it_passes() {
        let s = Server::start(Behaviour::FailFirst(3));
        within(wait_ready(
            &ready(ProbeKind::Http(s.url("/health")), 10_000, 20),
            &ctx(),
        ))
        .await
        .unwrap();
        assert_eq!(s.requests(), 4);
    }

    #[tokio::test]
    async fn wait_ready_gives_up_with_last_reason_and_time() {
        let s = Server::start(Behaviour::Status(503));
        let t0 = std::time::Instant::now();
        let e = within(wait_ready(
            &ready(ProbeKind::Http(s.url("/health")), 300, 50),
            &ctx(),
        ))
        .await
        .unwrap_err();
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(e.reason.starts_with("not ready after 3"), "{e}");
        assert!(
            e.reason
                .ends_with(&format!("HTTP 503 from {}", s.url("/health"))),
            "{e}"
        );
        assert!(s.requests() >= 2, "{}", s.requests());
    }

    #[tokio::test]
    async fn wait_ready_ends_by_its_deadline_on_a_hanging_server() {
        let s = Server::start(Behaviour::Hang);
        let t0 = std::time::Instant::now();
        let e = within(wait_ready(
            &ready(ProbeKind::Http(s.url("/")), 400, 50),
            &ctx(),
        ))
        .await
        .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(e.reason.contains("timed out"), "{e}");
    }

    #[tokio::test]
    async fn an_expanded_probe_runs_and_templates_are_not_expanded_twice() {
        let s = Server::start(Behaviour::Status(200));
        let env = vec![("HEALTH_PATH".to_string(), "/health".to_string())];
        let probe = expand(&ProbeKind::Http(s.url("${HEALTH_PATH}")), &env).unwrap();
        within(wait_ready(&ready(probe, 5000, 50), &ctx()))
            .await
            .unwrap();
        // `$$` is a literal `$` after one expansion; check does not expand
        // again, so the shell gets `'${HOME}'` in single quotes, verbatim.
        let probe = expand(
            &ProbeKind::Exec(CommandSpec::Shell(
                "printf %s '$${HOME}' | grep -qF '$$'".into(),
            )),
            &env,
        )
        .unwrap();
        within(check(&probe, &ctx(), Duration::from_secs(5)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_last_attempt_cut_by_the_deadline_keeps_the_better_reason() {
        // Each attempt takes 300ms and fails; one of them is always cut
        // short by the deadline, whose "timed out" must not hide "exited 1".
        let e = within(wait_ready(
            &ready(
                ProbeKind::Exec(CommandSpec::Shell("sleep 0.3; echo nope; exit 1".into())),
                1800,
                400,
            ),
            &ctx(),
        ))
        .await
        .unwrap_err();
        assert!(e.reason.ends_with("exited 1: nope"), "{e}");
    }

    #[tokio::test]
    async fn wait_ready_tcp_passes_once_listening() {
        // Deterministic: the listener exists before the gate starts, the
        // interesting part (retrying) is covered by the HTTP test above.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        within(wait_ready(&ready(ProbeKind::Tcp(addr), 5000, 50), &ctx()))
            .await
            .unwrap();
    }

    #[test]
    fn expand_fills_templates_from_the_instance_env() {
        let env = vec![
            ("API_PORT".to_string(), "18000".to_string()),
            ("STACKCTL_INSTANCE".to_string(), "2".to_string()),
        ];
        let k = expand(
            &ProbeKind::Http("http://127.0.0.1:${API_PORT:-8000}/h".into()),
            &env,
        )
        .unwrap();
        assert!(matches!(k, ProbeKind::Http(u) if u == "http://127.0.0.1:18000/h"));
        let k = expand(
            &ProbeKind::Tcp("127.0.0.1:1810${STACKCTL_INSTANCE}".into()),
            &env,
        )
        .unwrap();
        assert!(matches!(k, ProbeKind::Tcp(a) if a == "127.0.0.1:18102"));
        let k = expand(
            &ProbeKind::Exec(CommandSpec::Argv(vec!["check".into(), "${NOPE:-x}".into()])),
            &env,
        )
        .unwrap();
        assert!(matches!(k, ProbeKind::Exec(CommandSpec::Argv(v)) if v[1] == "x"));
        let e = expand(&ProbeKind::Tcp("${UNSET_FOR_TEST}:1".into()), &env).unwrap_err();
        assert!(e.reason.contains("UNSET_FOR_TEST"), "{e}");
    }

    #[test]
    fn durations_print_like_the_stack_file() {
        assert_eq!(fmt_duration(Duration::from_millis(2000)), "2s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(
            fmt_duration(Duration::from_nanos(1_500_000_123)),
            "1s 500ms"
        );
    }

    /// A port nothing listens on (bound, then released).
    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }
}
