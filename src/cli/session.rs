//! Talking to the stack's supervisor from the command line: finding it,
//! launching it when needed, sending one request and showing its progress.
//!
//! Owns: connecting, launching the anchor (and so the supervisor), the
//! request/progress loop, a broken stack file's warning. Must not touch:
//! the wire format (`control`), what a command means.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::Global;
use crate::anchor::proto::ToAnchor;
use crate::config::Stack;
use crate::control::client::{Client, Connect};
use crate::control::protocol::{Request, Response, Step};
use crate::error::{Error, Result};
use crate::output::Style;
use crate::state::StateDir;
use crate::status::{ReloadPlan, StatusDoc};
use crate::timeline::StartSummary;

/// The stack file named by `-f`/`STACKCTL_FILE` or found from the cwd, loaded.
///
/// # Errors
/// No stack file, or an invalid one (exit 2).
pub fn load_stack(g: &Global) -> Result<(PathBuf, Stack)> {
    let path = crate::config::discover(g.file.as_deref())?;
    let path = std::path::absolute(&path).unwrap_or(path);
    let stack = crate::config::load(&path)?;
    Ok((path, stack))
}

/// Prints the stack file's warnings (valid, but probably not what was
/// meant) on stderr.
pub fn print_warnings(stack: &Stack) {
    let mut e = std::io::stderr().lock();
    for w in &stack.warnings {
        let _ = write!(e, "{w}");
    }
}

/// Like [`load_stack`], but a stack file that does not validate still
/// yields a shell of a stack (name, state folder, lock file: enough to
/// reach a running supervisor, `config::shell`), together with the error.
/// Commands that act on what runs go through [`Target`].
///
/// # Errors
/// No stack file, or one that cannot be read.
pub fn load_stack_lenient(g: &Global) -> Result<(PathBuf, Stack, Option<Error>)> {
    let path = crate::config::discover(g.file.as_deref())?;
    let path = std::path::absolute(&path).unwrap_or(path);
    match crate::config::load(&path) {
        Ok(stack) => Ok((path, stack, None)),
        Err(e @ crate::config::ConfigError::Invalid { .. }) => {
            let shell = crate::config::shell(&path);
            Ok((path, shell, Some(Error::Config(e))))
        }
        Err(e) => Err(e.into()),
    }
}

/// The stack an operation on what runs is aimed at, found even when the
/// stack file on disk no longer validates: the one home of "a broken
/// edit to stack.toml never locks the operator out of a running stack".
/// A running supervisor keeps the file it loaded, so `status`, `stop`,
/// `restart`, `scale` and `start` go through it (warning that the file on
/// disk is broken, with its diagnostics); only what needs the file itself
/// — a new supervisor, `reload` — refuses ([`Target::valid`]).
pub struct Target {
    pub path: PathBuf,
    /// The stack file, or the shell of it when it does not validate.
    pub stack: Stack,
    /// Why the file on disk does not validate (its `check` diagnostics).
    pub invalid: Option<Error>,
}

impl Target {
    /// The stack file, loaded leniently.
    ///
    /// # Errors
    /// No stack file, or one that cannot be read.
    pub fn find(g: &Global) -> Result<Target> {
        let (path, stack, invalid) = load_stack_lenient(g)?;
        Ok(Target {
            path,
            stack,
            invalid,
        })
    }

    /// The running supervisor, if one answers. When the file on disk does
    /// not validate, says so on stderr with its diagnostics, ending with
    /// `doing` (what the command does instead: `restarting through the
    /// running supervisor`).
    ///
    /// # Errors
    /// A socket that cannot be used (permission denied).
    pub fn running(&self, doing: &str) -> Result<Option<Client>> {
        let client = connect(&self.stack)?;
        if let (Some(_), Some(e)) = (&client, &self.invalid) {
            warn_invalid(e, doing);
        }
        Ok(client)
    }

    /// The stack file, which must validate: for what reads it (a new
    /// supervisor, `reload`).
    ///
    /// # Errors
    /// The file's diagnostics (2).
    pub fn valid(self) -> Result<(PathBuf, Stack)> {
        match self.invalid {
            Some(e) => Err(e),
            None => Ok((self.path, self.stack)),
        }
    }
}

/// Prints that the stack file is broken and the pid files are used; its
/// diagnostics end with `outcome`, what the command does instead.
pub fn warn_invalid_offline(err: &Error, outcome: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(
        e,
        "warning: the stack file does not validate and no supervisor runs; going by the pid files:"
    );
    let _ = render_with_outcome(err, outcome, &mut e);
}

/// Prints that the stack file is broken and the files of its state folder
/// are read anyway (`logs`); its diagnostics end with `outcome`.
pub fn warn_invalid_files(err: &Error, outcome: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(
        e,
        "warning: the stack file on disk does not validate; going by its state folder:"
    );
    let _ = render_with_outcome(err, outcome, &mut e);
}

/// Prints that the stack file on disk is broken but the running
/// supervisor, which keeps the file it loaded, is used; its diagnostics
/// end with `outcome`, what the command does instead.
fn warn_invalid(err: &Error, outcome: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(
        e,
        "warning: the stack file on disk does not validate; the running supervisor goes on with the one it loaded (`stackctl reload` once it is fixed):"
    );
    let _ = render_with_outcome(err, outcome, &mut e);
}

/// Renders `err`; a stack file's diagnostics end with `outcome`.
pub fn render_with_outcome(err: &Error, outcome: &str, w: &mut dyn Write) -> std::io::Result<()> {
    match err {
        Error::Config(crate::config::ConfigError::Invalid { rendered, count }) => {
            let rendered = crate::config::diag::with_outcome(rendered, outcome);
            let count = *count;
            Error::Config(crate::config::ConfigError::Invalid { rendered, count }).render(w)
        }
        other => other.render(w),
    }
}

/// Connects to the running supervisor, if any.
///
/// # Errors
/// When the socket exists but cannot be used (e.g. permission denied).
pub fn connect(stack: &Stack) -> Result<Option<Client>> {
    let socket = StateDir::new(&stack.state_dir).socket();
    match Client::connect(&socket) {
        Ok(Connect::Connected(c)) => Ok(Some(c)),
        Ok(Connect::NoSupervisor) => Ok(None),
        Err(e) => Err(Error::Failed {
            message: format!("cannot reach the supervisor at {}: {e}", socket.display()),
            hint: (e.kind() == std::io::ErrorKind::PermissionDenied)
                .then(|| "only the user who started the stack may control it".into()),
            detail: None,
        }),
    }
}

/// How to launch a supervisor that is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// A detached background process (the default).
    Detached,
    /// A detached tmux session `stackctl-<stack>` running it in the foreground.
    Tmux,
}

/// Connects to the supervisor, launching one first if none runs.
///
/// # Errors
/// When it cannot be launched or does not answer in time (with the tail of
/// its log).
pub fn ensure_supervisor(path: &Path, stack: &Stack, how: Launch, g: &Global) -> Result<Client> {
    if let Some(c) = connect(stack)? {
        return Ok(c);
    }
    let state = StateDir::prepared(&stack.state_dir)?;
    let exe = crate::spawn::stackctl_binary()
        .map_err(|e| Error::failed(format!("cannot find the stackctl binary: {e}")))?;
    let mut child = match how {
        Launch::Detached => {
            if let Some(c) = launch_through_anchor(stack, &state)? {
                return Ok(c);
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(state.own_log())
                .map_err(|e| {
                    Error::failed(format!("cannot open {}: {e}", state.own_log().display()))
                })?;
            // The anchor launches the supervisor with our pipe as its stdout:
            // the supervisor says `ready` there once it listens.
            let argv = crate::anchor::command_line(&exe, &stack.state_dir, path, true);
            std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(&stack.root)
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| Error::failed(format!("cannot launch the stack's anchor: {e}")))?
        }
        Launch::Tmux => {
            let session = format!("stackctl-{}", stack.name);
            let cmdline = format!(
                "{} supervise --foreground --stack {}",
                shell_quote(&exe.display().to_string()),
                shell_quote(&path.display().to_string())
            );
            tmux_new_session(
                &session,
                &stack.root,
                &cmdline,
                "use `stackctl start` without --tmux",
            )?;
            if !g.quiet {
                println!("supervisor running in tmux session {session} (tmux attach -t {session})");
            }
            std::process::Command::new("true")
                .spawn()
                .map_err(|e| Error::failed(format!("cannot spawn: {e}")))?
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    if let Some(out) = child.stdout.take() {
        // An event, not a poll: the supervisor's `ready` line, or end of
        // file when it exits (then the loop below tells why).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            let _ = tx.send(line);
        });
        let _ = rx.recv_timeout(Duration::from_secs(15));
    }
    let mut step = Duration::from_millis(2);
    loop {
        if let Some(c) = connect(stack)? {
            return Ok(c);
        }
        if how == Launch::Detached {
            // Our anchor exits at once when another `start` launched one
            // first (it lost the anchor's flock): that one launches a
            // supervisor and answers once it serves.
            if let Ok(Some(st)) = child.try_wait() {
                if crate::state::is_held(&state.anchor_lock()) {
                    let launch = crate::anchor::client::request(&state, &ToAnchor::Launch, &[]);
                    if let (Ok(true), Some(c)) = (launch, connect(stack)?) {
                        return Ok(c);
                    }
                } else if !supervisor_lock_held(&state) {
                    return Err(supervisor_died(
                        &state,
                        &format!("the stack's anchor exited at once ({st})"),
                    ));
                }
            }
        } else {
            let _ = child.try_wait();
        }
        if Instant::now() > deadline {
            return Err(supervisor_died(
                &state,
                "the supervisor did not answer within 15s",
            ));
        }
        std::thread::sleep(step);
        step = (step * 2).min(Duration::from_millis(20));
    }
}

/// Asks the stack's running anchor (its supervisor died, or is being
/// relaunched) for a supervisor, and connects to it once it serves; `None`
/// when no anchor runs. An anchor that says a supervisor serves while none
/// answers has not yet seen it die: asked again, it relaunches one (a new
/// anchor launched meanwhile would only lose the anchor's flock).
fn launch_through_anchor(stack: &Stack, state: &StateDir) -> Result<Option<Client>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut step = Duration::from_millis(2);
    loop {
        match crate::anchor::client::request(state, &ToAnchor::Launch, &[]) {
            Ok(true) => {
                if let Some(c) = connect(stack)? {
                    return Ok(Some(c));
                }
            }
            Ok(false) => return Ok(None),
            Err(e) => {
                return Err(Error::Failed {
                    message: format!("the stack's anchor did not launch a supervisor: {e}"),
                    hint: Some(format!("see {}", state.own_log().display())),
                    detail: None,
                })
            }
        }
        if Instant::now() > deadline {
            return Err(supervisor_died(
                state,
                "the stack's anchor launched no supervisor that answers within 15s",
            ));
        }
        std::thread::sleep(step);
        step = (step * 2).min(Duration::from_millis(20));
    }
}

fn supervisor_died(state: &StateDir, what: &str) -> Error {
    let lines = crate::logs::tail(&state.own_log(), 10).unwrap_or_default();
    Error::Failed {
        message: what.to_string(),
        hint: Some(format!("see {}", state.own_log().display())),
        detail: (!lines.is_empty())
            .then(|| format!("── last lines of stackctl.log ──\n{}\n──", lines.join("\n"))),
    }
}

/// Starts `cmdline` in a new detached tmux session `session` in `cwd`.
/// An existing session of that name is refused, never killed: it may be a
/// dead supervisor's, or another stack's with the same name.
///
/// # Errors
/// The session exists, or tmux is missing or fails (`without` says what to
/// do instead).
pub fn tmux_new_session(session: &str, cwd: &Path, cmdline: &str, without: &str) -> Result<()> {
    let exists = std::process::Command::new("tmux")
        .args(["has-session", "-t", session])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return Err(Error::Failed {
            message: format!("tmux session {session} already exists"),
            hint: Some(format!(
                "`tmux attach -t {session}` to see it; if it is a leftover, `tmux kill-session -t {session}`; if another stack has the same name, give this one its own `[stack] name`"
            )),
            detail: None,
        });
    }
    let st = std::process::Command::new("tmux")
        .args(["new-session", "-d", "-s", session, "-c"])
        .arg(cwd)
        .arg(cmdline)
        .status()
        .map_err(|e| Error::Failed {
            message: format!("cannot run tmux: {e}"),
            hint: Some(format!("install tmux, or {without}")),
            detail: None,
        })?;
    if !st.success() {
        return Err(Error::failed(format!(
            "tmux could not create session {session}"
        )));
    }
    Ok(())
}

/// `s` quoted for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Sends `req` and shows progress until the supervisor is done: on a
/// terminal, a live line per process under way (`cli::live`); else (a
/// pipe, CI, `--quiet`) one line per event. Returns the status document
/// when the answer carried one.
///
/// # Errors
/// The operation's failure, as the supervisor reported it.
pub fn request(client: &mut Client, req: Request, g: &Global) -> Result<Option<StatusDoc>> {
    request_done(client, req, g).map(|a| a.status)
}

/// What an answer carried besides its progress.
#[derive(Debug, Default)]
pub struct Answer {
    /// A status document.
    pub status: Option<StatusDoc>,
    /// What the final `done` said of a start (its total and critical chain).
    pub summary: Option<StartSummary>,
    /// A reload's plan.
    pub plan: Option<ReloadPlan>,
}

/// [`request`], returning all the answer carried.
///
/// # Errors
/// As [`request`].
pub fn request_done(client: &mut Client, req: Request, g: &Global) -> Result<Answer> {
    match exchange(client, req, g) {
        Exchange::Answered(r) => r,
        Exchange::Lost(why) => Err(Error::failed(why)),
    }
}

/// How an exchange with the supervisor ended.
enum Exchange {
    /// It answered (`done`), or could not be asked.
    Answered(Result<Answer>),
    /// The connection ended before `done`: the supervisor went away.
    Lost(String),
}

/// [`request_done`] for an operation that must not fail because its
/// supervisor was killed midway (`start`, `stop`, `restart`): the
/// supervisor its anchor relaunches finishes the operation on its own (it
/// is kept with the anchor while under way), so the command waits for that
/// one and asks it what waits for the end — a `start` of the same names (a
/// restart that was under way is finished by then), the same `stop` — or,
/// for the stop of the whole stack, waits for the anchor to exit. Those
/// follow-ups change nothing that is already done, so a supervisor lost
/// again (killed once more, or a connection that reached the dying one's
/// socket before it was closed) is just waited for again.
///
/// # Errors
/// As [`request_done`]; no supervisor back within a minute, or one lost
/// [`MAX_LOST`] times over (1).
pub fn request_surviving(
    stack: &Stack,
    client: &mut Client,
    req: Request,
    g: &Global,
) -> Result<Answer> {
    let then = after_a_lost_supervisor(&req);
    let mut why = match exchange(client, req, g) {
        Exchange::Answered(r) => return r,
        Exchange::Lost(why) => why,
    };
    let state = StateDir::new(&stack.state_dir);
    if !crate::state::is_held(&state.anchor_lock()) {
        return Err(Error::failed(why));
    }
    if !g.quiet {
        eprintln!(
            "stackctl: {why}; its anchor relaunches one, which finishes what was under way: waiting for it"
        );
    }
    let limit = Duration::from_secs(60);
    let Some(then) = then else {
        // The stop of the whole stack: done when the anchor is gone.
        return if crate::state::wait_released(&state.anchor_lock(), limit) {
            Ok(Answer::default())
        } else {
            Err(Error::failed(format!(
                "the stop of stack {} was not finished within {}s of losing its supervisor",
                stack.name,
                limit.as_secs()
            )))
        };
    };
    for _ in 0..MAX_LOST {
        let Some(mut c) = reconnect_within(stack, limit)? else {
            return Err(supervisor_died(
                &state,
                &format!(
                    "{why}, and no supervisor came back within {}s",
                    limit.as_secs()
                ),
            ));
        };
        match exchange(&mut c, then.clone(), g) {
            Exchange::Answered(r) => return r,
            Exchange::Lost(again) if crate::state::is_held(&state.anchor_lock()) => why = again,
            Exchange::Lost(again) => return Err(Error::failed(again)),
        }
    }
    Err(supervisor_died(
        &state,
        &format!("{why}: the supervisor was lost {MAX_LOST} times over"),
    ))
}

/// How many supervisors in a row [`request_surviving`] sees lost before
/// it gives up (one that crashes as it comes up is relaunched forever).
const MAX_LOST: usize = 10;

/// Connects to the supervisor, waiting up to `limit` for one to answer.
fn reconnect_within(stack: &Stack, limit: Duration) -> Result<Option<Client>> {
    let deadline = Instant::now() + limit;
    let mut step = Duration::from_millis(5);
    loop {
        if let Some(c) = connect(stack)? {
            return Ok(Some(c));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(step);
        step = (step * 2).min(Duration::from_millis(200));
    }
}

/// What to ask the next supervisor after `req`'s was lost; `None`: the
/// stop of the whole stack (nothing to ask: it ends with the anchor).
fn after_a_lost_supervisor(req: &Request) -> Option<Request> {
    match req {
        Request::Stop { names, .. } if names.is_empty() => None,
        Request::Start { names, scale, .. } => Some(Request::Start {
            names: names.clone(),
            scale: scale.clone(),
            env: None,
        }),
        Request::Restart { names, .. } => Some(Request::Start {
            names: names.clone(),
            scale: std::collections::BTreeMap::new(),
            env: None,
        }),
        other => Some(other.clone()),
    }
}

fn exchange(client: &mut Client, req: Request, g: &Global) -> Exchange {
    let live = !g.quiet && super::live::terminal();
    let sent = if live {
        client.send_live(req)
    } else {
        client.send(req)
    };
    if let Err(e) = sent {
        return Exchange::Answered(Err(Error::failed(format!(
            "cannot talk to the supervisor: {e}"
        ))));
    }
    let style = Style { color: g.color };
    let mut board = live
        .then(|| super::live::Board::new(std::io::stdout(), style, Box::new(super::live::size)));
    let mut doc = None;
    let mut plan = None;
    let outcome = loop {
        let r = match client.recv() {
            Ok(r) => r,
            Err(e) => break Exchange::Lost(format!("lost the supervisor: {e}")),
        };
        match r {
            None => {
                break Exchange::Lost(
                    "the supervisor closed the connection before answering".into(),
                )
            }
            Some(Response::Progress(p)) => {
                if p.plan.is_some() {
                    plan.clone_from(&p.plan);
                }
                if g.quiet {
                    continue;
                }
                if let Some(b) = board.as_mut() {
                    let _ = b.show(p);
                    continue;
                }
                if matches!(p.step, Step::Starting | Step::Stopping) && g.verbose == 0 {
                    continue;
                }
                if p.step == Step::Waiting {
                    continue;
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", crate::output::progress_line(&p, style));
            }
            Some(Response::Status(d)) => doc = Some(d),
            Some(Response::Pong { .. }) => {}
            Some(Response::Done {
                ok: true, summary, ..
            }) => {
                break Exchange::Answered(Ok(Answer {
                    status: doc.take(),
                    summary,
                    plan: plan.take(),
                }))
            }
            Some(Response::Done {
                ok: false, error, ..
            }) => {
                break Exchange::Answered(Err(error
                    .map(Error::from)
                    .unwrap_or_else(|| Error::failed("the supervisor reported a failure"))))
            }
        }
    };
    if let Some(b) = board.as_mut() {
        let _ = b.clear();
    }
    outcome
}

/// Who answers on the control socket.
#[derive(Debug, Clone)]
pub struct Who {
    /// Its stackctl version.
    pub stackctl: String,
    pub protocol: u32,
    pub pid: i32,
    /// Its anchor's pid (absent from older supervisors).
    pub anchor: Option<i32>,
    /// It knows `reload --dry-run`.
    pub dry_run: bool,
}

/// Who answers on the control socket.
///
/// # Errors
/// When it does not answer a ping.
pub fn ping(client: &mut Client) -> Result<Who> {
    client
        .send(Request::Ping)
        .map_err(|e| Error::failed(format!("cannot talk to the supervisor: {e}")))?;
    let mut pong = None;
    loop {
        match client
            .recv()
            .map_err(|e| Error::failed(format!("lost the supervisor: {e}")))?
        {
            Some(Response::Pong {
                stackctl,
                protocol,
                pid,
                anchor,
                dry_run,
            }) => {
                pong = Some(Who {
                    stackctl,
                    protocol,
                    pid,
                    anchor,
                    dry_run,
                })
            }
            Some(Response::Done { ok: true, .. }) => break,
            Some(Response::Done {
                ok: false, error, ..
            }) => {
                return Err(error
                    .map(Error::from)
                    .unwrap_or_else(|| Error::failed("the supervisor refused a ping")))
            }
            Some(_) => {}
            None => break,
        }
    }
    pong.ok_or_else(|| {
        Error::failed(
            "the supervisor answered a ping without saying who it is (an older stackctl?)",
        )
    })
}

/// Whether a supervisor holds the stack's single-supervisor flock now.
fn supervisor_lock_held(state: &StateDir) -> bool {
    crate::state::is_held(&state.supervisor_lock())
}

/// Waits (up to `limit`) until no supervisor holds the stack's lock.
pub fn wait_supervisor_gone(stack: &Stack, limit: Duration) -> bool {
    crate::state::wait_released(&StateDir::new(&stack.state_dir).supervisor_lock(), limit)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn after_a_lost_supervisor_the_follow_up_changes_nothing_already_done() {
        let names = vec!["api".to_string()];
        let scale = BTreeMap::from([("w".to_string(), 3)]);
        let env = Some(crate::control::protocol::CallerEnv::default());
        let start = |names: &[String], scale: &BTreeMap<String, u32>| Request::Start {
            names: names.to_vec(),
            scale: scale.clone(),
            env: None,
        };
        let stop = |names: &[String]| Request::Stop {
            names: names.to_vec(),
            with_dependents: true,
        };
        let table = [
            // A start: the same start (its --update-env is applied already).
            (
                Request::Start {
                    names: names.clone(),
                    scale: scale.clone(),
                    env: env.clone(),
                },
                Some(start(&names, &scale)),
            ),
            // A restart: finished by the next supervisor; wait for it up.
            (
                Request::Restart {
                    names: names.clone(),
                    env,
                },
                Some(start(&names, &BTreeMap::new())),
            ),
            // A partial stop: the same stop.
            (stop(&names), Some(stop(&names))),
            // The stop of the stack: nothing to ask, it ends with the anchor.
            (stop(&[]), None),
        ];
        for (req, want) in table {
            assert_eq!(after_a_lost_supervisor(&req), want, "{req:?}");
        }
    }
}
