//! The supervisor process: the single-supervisor flock, the connection to
//! the stack's anchor (the one that runs, with what it keeps, or a new one
//! it launches; a new one again when the anchor dies), the stack file it
//! runs on (the anchor's copy of the last one loaded, else the file), its
//! own log, clearing what a killed predecessor left, the control socket
//! (served by `control::server`), and signals.
//!
//! Owns: wiring the [`Supervisor`] to the outside world for the life of
//! the process. Must not touch: what operations do (the supervisor's), the
//! wire format (`control`).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::anchor::client::{Inventory, Link};
use crate::error::Error;
use crate::output::Style;
use crate::spawn::identity::PidRecord;
use crate::state::StateDir;
use crate::status::{Progress, Step};
use crate::supervisor::offline::Cleared;
use crate::supervisor::Supervisor;

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stream every process's output to stdout, prefixed by its name.
    pub foreground: bool,
    /// Start these at once (`start --foreground`): names and pool sizes.
    pub initial: Option<(Vec<String>, BTreeMap<String, u32>)>,
    /// Colour the foreground output.
    pub color: bool,
    /// The stack's state folder, when the anchor launched this supervisor
    /// (it says where it is): the stack file is then the one the anchor
    /// keeps, which a broken or unreloaded edit on disk does not change.
    pub state_dir: Option<std::path::PathBuf>,
}

/// Runs the supervisor for the stack file at `path` until the stack is
/// stopped.
///
/// # Errors
/// An invalid stack file (2); another supervisor running, the socket or the
/// state folder unusable (1).
pub fn run(path: &Path, opts: Options) -> Result<u8, Error> {
    // The state folder: the anchor's, else the stack file's (which must
    // then be valid: nothing runs yet).
    let (state_dir, on_disk) = match &opts.state_dir {
        Some(d) => (d.clone(), None),
        None => {
            let stack = crate::config::load(path)?;
            (stack.state_dir.clone(), Some(stack))
        }
    };
    let state = StateDir::prepared(&state_dir)?;
    crate::spawn::raise_fd_limit();
    let lock_path = state.supervisor_lock();
    let lock = crate::state::try_hold(&lock_path)
        .map_err(|e| Error::failed(format!("cannot open {}: {e}", lock_path.display())))?;
    let Some(lock) = lock else {
        let holder = PidRecord::read(&state.supervisor_pid())
            .ok()
            .flatten()
            .map(|r| r.pid);
        return Err(Error::Failed {
            message: format!(
                "a supervisor is already running for stack {}{}",
                on_disk
                    .as_ref()
                    .map_or_else(|| crate::config::shell(path).name, |s| s.name.clone()),
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            hint: Some("use `stackctl status`, or `stackctl stop` first".into()),
            detail: None,
        });
    };
    // One thread runs every task: units mostly wait, and what blocks (an
    // http probe, a /proc scan of a stop) is short or on the blocking pool.
    // Fewer threads, fewer stacks and allocator arenas: the supervisor's
    // memory is most of stackctl's (see bench/core.sh).
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(32)
        .thread_stack_size(256 * 1024)
        .enable_all()
        .build()
        .map_err(|e| Error::failed(format!("cannot start the runtime: {e}")))?;
    let code = rt.block_on(async {
        let (stack, anchor) = stack_and_anchor(path, on_disk, &state).await?;
        let _log_guard = crate::logs::own::init(&state, &stack.logs, opts.foreground, opts.color);
        serve(stack, anchor, state.clone(), opts).await
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    PidRecord::remove(&state.supervisor_pid());
    drop(lock);
    code
}

/// The stack this supervisor runs on, and the anchor that runs (if one
/// does): with an anchor that keeps the text of the stack file its last
/// supervisor loaded, that text (a relaunch applies no edit on disk, and a
/// broken one does not keep a supervisor from coming back); else the file
/// on disk.
async fn stack_and_anchor(
    path: &Path,
    on_disk: Option<crate::config::Stack>,
    state: &StateDir,
) -> Result<(crate::config::Stack, Option<(Arc<Link>, Inventory)>), Error> {
    let anchor = Link::connect(state).await.map_err(|e| Error::Failed {
        message: format!("the stack's anchor refused this supervisor: {e}"),
        hint: Some("`stackctl status` tells what runs".into()),
        detail: None,
    })?;
    let kept = anchor
        .as_ref()
        .and_then(|(_, inv)| inv.kept.get(crate::supervisor::record::STACK_FILE_KEY))
        .map(|text| crate::config::load_text(path, text));
    let stack = match (kept, on_disk) {
        (Some(Ok(stack)), _) => stack,
        // A kept text this binary cannot read (an upgrade that dropped a
        // key): the file on disk.
        (Some(Err(_)) | None, Some(stack)) => stack,
        (Some(Err(_)) | None, None) => crate::config::load(path)?,
    };
    Ok((stack, anchor))
}

async fn serve(
    stack: crate::config::Stack,
    anchor: Option<(Arc<Link>, Inventory)>,
    state: StateDir,
    opts: Options,
) -> Result<u8, Error> {
    let (link, inventory, cleared) = anchor_link(&stack, anchor, &state, &opts).await?;
    let me = std::process::id() as i32;
    if let Ok(rec) = PidRecord::capture(me, "stackctl", me) {
        if let Err(e) = rec.write(&state.supervisor_pid()) {
            tracing::error!("cannot write {}: {e}", state.supervisor_pid().display());
        }
    }
    let sup = Supervisor::new(stack, link.clone());
    let adoption = sup.adopt(inventory);
    if adoption.adopted > 0 {
        tracing::info!(
            "took up {} processes from the anchor (pid {})",
            adoption.adopted,
            link.anchor_pid()
        );
    }
    let socket = state.socket();
    let listener = crate::control::server::bind(&socket)
        .map_err(|e| Error::failed(format!("cannot listen on {}: {e}", socket.display())))?;
    link.serving();
    if !opts.foreground {
        announce_ready();
    }
    let style = Style { color: opts.color };
    // Under systemd (`Type=notify`): READY=1, STATUS=, STOPPING=1.
    let manager = opts
        .foreground
        .then(crate::sd_notify::Manager::from_env)
        .flatten()
        .map(Arc::new);
    if let Some(m) = &manager {
        tokio::spawn(tell_manager(sup.clone(), m.clone(), opts.initial.is_none()));
    }
    for (name, pid) in &cleared.stopped {
        sup.notice(
            name,
            &format!("stopped pid {pid}, left running by a supervisor that was killed"),
        );
    }
    tracing::info!(stack = %sup.stack().name, "supervisor {me} listening on {}", socket.display());
    {
        let sup = sup.clone();
        tokio::spawn(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let logger = tokio::spawn(log_progress(rx, "resume"));
            sup.reconcile(adoption, &tx).await;
            drop(tx);
            let _ = logger.await;
        });
    }
    let mut anchor_gone = link.broken();

    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::failed(format!("signal: {e}")))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::failed(format!("signal: {e}")))?;
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| Error::failed(format!("signal: {e}")))?;
    let mut shutdown = sup.shutdown_requested();
    let mut conns = JoinSet::new();
    let mut rehoming = JoinSet::new();

    if let Some((names, scale)) = opts.initial.clone() {
        let sup = sup.clone();
        let started_manager = manager.clone();
        tokio::spawn(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let printer = tokio::spawn(print_progress(rx, style));
            let r = sup.start_env(&names, &scale, None, &tx).await;
            drop(tx);
            let _ = printer.await;
            if let Some(m) = &started_manager {
                // The stack is up (or what could come up is): systemd's
                // start job is done either way; STATUS= says which.
                let line = match &r {
                    Ok(summary) => crate::output::up_line(&sup.stack().name, summary.as_ref()),
                    Err(e) => format!("stack {}: {e}", sup.stack().name),
                };
                let _ = m.send(&["READY=1".into(), crate::sd_notify::status(&line)]);
            }
            match r {
                Ok(summary) => println!(
                    "{}{} (Ctrl-C stops it)",
                    style.prefix("stackctl", FOREGROUND_WIDTH),
                    crate::output::up_line(&sup.stack().name, summary.as_ref())
                ),
                Err(e) => {
                    let mut err = std::io::stderr().lock();
                    let _ = e.render(&mut err);
                }
            }
        });
    }

    let mut stopping = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { conns.spawn(crate::control::server::serve_connection(sup.clone(), stream)); }
                Err(e) => tracing::error!("accept failed: {e}"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = term.recv() => begin_stop(&sup, &mut stopping, "SIGTERM", style, manager.as_deref()),
            _ = int.recv() => begin_stop(&sup, &mut stopping, "SIGINT", style, manager.as_deref()),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the stack file");
                let sup = sup.clone();
                tokio::spawn(async move {
                    let (tx, rx) = mpsc::unbounded_channel::<Progress>();
                    let logger = tokio::spawn(log_progress(rx, "reload"));
                    if let Err(e) = sup.reload(&tx).await {
                        let mut text = Vec::new();
                        let _ = e.render(&mut text);
                        tracing::error!("reload refused: {}", String::from_utf8_lossy(&text).trim_end());
                    }
                    drop(tx);
                    let _ = logger.await;
                });
            }
            _ = shutdown.changed() => break,
            gone = anchor_gone.wait_for(|gone| *gone), if rehoming.is_empty() => {
                // `wait_for` hands back a read guard on the watch: it must
                // go before `rehome`, whose `reconnect` writes to that watch
                // (held, it deadlocked this thread for good).
                drop(gone);
                tracing::error!("the anchor died; its processes run on, and this supervisor takes them to a new one");
                rehoming.spawn(rehome_until_done(sup.clone(), state.clone(), opts.clone()));
            }
            Some(_) = rehoming.join_next(), if !rehoming.is_empty() => {}
        }
    }
    // Let the connection that asked for the stop hear that it is done.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    sup.flush_timeline();
    if sup.upgrading() {
        // Nothing is stopped, nothing is cleaned up (the socket is the next
        // supervisor's; a notify socket's file belongs to a live process):
        // this process just goes.
        tracing::info!("supervisor {me} leaving for the new binary");
        std::process::exit(0);
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("supervisor {me} exiting");
    Ok(crate::error::exit::SUCCESS)
}

/// Tells the `stackctl start` that launched this supervisor that it
/// listens (a line on stdout, which is that command's pipe), then points
/// stdout at /dev/null so nothing later can block on or break that pipe.
fn announce_ready() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

fn begin_stop(
    sup: &Arc<Supervisor>,
    stopping: &mut bool,
    why: &str,
    style: Style,
    manager: Option<&crate::sd_notify::Manager>,
) {
    if let Some(m) = manager {
        let _ = m.send(&["STOPPING=1".into()]);
    }
    if *stopping {
        tracing::warn!("{why} again: killing every process now");
        sup.kill_all_now();
        return;
    }
    *stopping = true;
    tracing::info!("{why}: stopping the stack");
    let sup = sup.clone();
    tokio::spawn(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let printer = tokio::spawn(print_progress(rx, style));
        if let Err(e) = sup.shutdown(&tx).await {
            tracing::error!("{e}");
        }
        drop(tx);
        let _ = printer.await;
    });
}

/// The progress of an operation the daemon runs itself (`start
/// --foreground`'s start, a stop on a signal), on its terminal. Each event
/// once: a process that became ready, completed, failed or stopped is
/// already a line of its own on that terminal (the unit's, through the
/// stderr layer of `logs::own`, which shows the same whatever asked for
/// it); what no unit says — a process not started because a dependency
/// failed, a notice — is printed here.
async fn print_progress(mut rx: mpsc::UnboundedReceiver<Progress>, style: Style) {
    while let Some(p) = rx.recv().await {
        if !matches!(p.step, Step::NotStarted | Step::Info) {
            continue;
        }
        println!(
            "{}{}",
            style.prefix("stackctl", FOREGROUND_WIDTH),
            crate::output::progress_line(&p, style).trim_start()
        );
    }
}

/// Keeps the service manager told (`sd_notify`): READY=1 at once when
/// nothing is started here (`supervise --foreground`; `start --foreground`
/// says it once its start is over), then a `STATUS=` line whenever the
/// status changes (at most once a second), and STOPPING=1 once a stop of
/// the whole stack has begun (`stackctl stop`; a signal says it itself).
async fn tell_manager(sup: Arc<Supervisor>, m: Arc<crate::sd_notify::Manager>, ready_now: bool) {
    if ready_now {
        let _ = m.send(&["READY=1".into()]);
    }
    let mut changes = sup.changes();
    let mut stopping = false;
    let mut last = String::new();
    while changes.changed().await.is_ok() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        changes.borrow_and_update();
        let mut lines = Vec::new();
        if sup.closing() && !stopping {
            stopping = true;
            lines.push("STOPPING=1".to_string());
        }
        if let Ok(doc) = sup.status(&[]) {
            let line = crate::output::status_line(&doc);
            if line != last {
                lines.push(crate::sd_notify::status(&line));
                last = line;
            }
        }
        if !lines.is_empty() {
            let _ = m.send(&lines);
        }
    }
}

/// How wide the name column of `--foreground` output is, at least.
const FOREGROUND_WIDTH: usize = 12;

/// Progress of an operation nobody watches, into stackctl.log.
async fn log_progress(mut rx: mpsc::UnboundedReceiver<Progress>, what: &'static str) {
    while let Some(p) = rx.recv().await {
        // A reload's plan is in the log already, a line per process.
        if !matches!(p.step, Step::Starting | Step::Stopping | Step::Waiting) && p.plan.is_none() {
            tracing::info!(process = %p.process, "{what}: {}", p.message);
        }
    }
}

/// The connection to the stack's anchor: the one that runs, or a new one
/// this supervisor launches. With no anchor, whatever live processes the
/// pid files name are a killed supervisor's with broken output pipes (a
/// version without the anchor, or both killed): they are stopped first,
/// so there is never a second copy.
async fn anchor_link(
    stack: &crate::config::Stack,
    running: Option<(Arc<Link>, Inventory)>,
    state: &StateDir,
    opts: &Options,
) -> Result<(Arc<Link>, Inventory, Cleared), Error> {
    let refused = |e: std::io::Error| Error::Failed {
        message: format!("the stack's anchor refused this supervisor: {e}"),
        hint: Some("`stackctl status` tells what runs".into()),
        detail: None,
    };
    if let Some((link, inv)) = running {
        // Processes the pid files name that this anchor does not have are a
        // dead generation's (its anchor and supervisor were both killed,
        // and a new anchor came): stop them before anything starts.
        let keep: Vec<i32> = inv.children.iter().map(|c| c.info.pid).collect();
        let cleared = crate::supervisor::offline::stop_all_but(stack, &keep).await;
        log_cleared(&cleared);
        return Ok((link, inv, cleared));
    }
    let cleared = crate::supervisor::offline::stop_all(stack).await;
    log_cleared(&cleared);
    launch_anchor(stack, state, opts).await?;
    match Link::connect(state).await.map_err(refused)? {
        Some((link, inv)) => Ok((link, inv, cleared)),
        None => Err(Error::failed(format!(
            "the anchor this supervisor launched does not answer on {}",
            state.anchor_socket().display()
        ))),
    }
}

fn log_cleared(cleared: &Cleared) {
    for (name, pid) in &cleared.stopped {
        tracing::warn!(process = %name, "stopped pid {pid}, left running by a previous supervisor");
    }
    for (name, pid) in &cleared.survivors {
        tracing::error!(process = %name, "pid {pid}, left by a previous supervisor, survived SIGKILL");
    }
}

/// Launches an anchor that launches no supervisor (this one connects),
/// and waits for its `ready`. With `--foreground`, it prints every
/// process's output to this process's stdout.
async fn launch_anchor(
    stack: &crate::config::Stack,
    state: &StateDir,
    opts: &Options,
) -> Result<(), Error> {
    let exe = crate::spawn::stackctl_binary()
        .map_err(|e| Error::failed(format!("cannot find the stackctl binary: {e}")))?;
    let mut argv = crate::anchor::command_line(&exe, &stack.state_dir, &stack.file, false);
    let stderr = if opts.foreground {
        argv.push("--echo".into());
        if opts.color {
            argv.push("--color".into());
        }
        std::io::stdout().as_fd().try_clone_to_owned()
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.own_log())
            .map(OwnedFd::from)
    }
    .map_err(|e| Error::failed(format!("cannot give the anchor an output: {e}")))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::failed(format!("cannot make a pipe: {e}")))?;
    // A service manager's socket is stackctl's own: never the anchor's.
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != "NOTIFY_SOCKET")
        .collect();
    crate::spawn::spawn_with(
        &argv,
        &stack.root,
        &env,
        crate::spawn::Output::Split(ready_w, stderr),
    )
    .map_err(|e| Error::failed(format!("cannot launch the anchor: {e}")))?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(
            &mut std::io::BufReader::new(std::fs::File::from(ready_r)),
            &mut line,
        );
        line
    });
    match tokio::time::timeout(Duration::from_secs(15), line).await {
        Ok(Ok(l)) if l.trim() == "ready" => Ok(()),
        _ => Err(Error::Failed {
            message: "the anchor did not start".into(),
            hint: Some(format!("see {}", state.own_log().display())),
            detail: None,
        }),
    }
}

/// [`rehome`] until it works: this supervisor keeps every process's output
/// pipe open meanwhile (they would die of `SIGPIPE` at their next write
/// if it exited), and answers commands. A binary replaced on disk, a full
/// disk, a process table at its limit: each passes, and nothing was lost.
async fn rehome_until_done(sup: Arc<Supervisor>, state: StateDir, opts: Options) {
    let mut delay = Duration::from_secs(1);
    while let Err(e) = rehome(&sup, &state, &opts).await {
        tracing::error!(
            "cannot start a new anchor: {e}; trying again in {}",
            humantime::format_duration(delay)
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// After the anchor died: a new one, and every live process handed to it
/// (its pipe, which this supervisor kept a copy of, and its pid).
async fn rehome(sup: &Arc<Supervisor>, state: &StateDir, opts: &Options) -> Result<(), Error> {
    let stack = sup.stack();
    // One a try before this one launched, that could not be reached then.
    if sup.anchor().reconnect(state).await.is_ok() {
        sup.anchor().serving();
        return Ok(());
    }
    // The dead anchor's flock is released with its last file, a moment
    // after its connection ended (an exiting process closes its files one
    // by one): a new anchor started before that refuses to run.
    let lock = state.anchor_lock();
    let _ = tokio::task::spawn_blocking(move || {
        crate::state::wait_released(&lock, Duration::from_secs(5))
    })
    .await;
    launch_anchor(&stack, state, opts).await?;
    sup.anchor()
        .reconnect(state)
        .await
        .map_err(|e| Error::failed(format!("cannot reach the new anchor: {e}")))?;
    sup.anchor().serving();
    Ok(())
}
