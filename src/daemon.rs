//! The supervisor process: the single-supervisor flock, the subreaper, its
//! own log, clearing what a killed predecessor left, the control socket
//! (served by `control::server`), and signals.
//!
//! Owns: wiring the [`Supervisor`] to the outside world for the life of
//! the process. Must not touch: what operations do (the supervisor's), the
//! wire format (`control`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::error::Error;
use crate::output::Style;
use crate::spawn::identity::PidRecord;
use crate::state::StateDir;
use crate::status::{Progress, Step};
use crate::supervisor::unit::Echo;
use crate::supervisor::Supervisor;

/// How the supervisor runs.
pub struct Options {
    /// Stream every process's output to stdout, prefixed by its name.
    pub foreground: bool,
    /// Start these at once (`start --foreground`): names and pool sizes.
    pub initial: Option<(Vec<String>, BTreeMap<String, u32>)>,
    /// Colour the foreground output.
    pub color: bool,
}

/// Runs the supervisor for the stack file at `path` until the stack is
/// stopped.
///
/// # Errors
/// An invalid stack file (2); another supervisor running, the socket or the
/// state folder unusable (1).
pub fn run(path: &Path, opts: Options) -> Result<u8, Error> {
    let stack = crate::config::load(path)?;
    let state = StateDir::prepared(&stack.state_dir)?;
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
                stack.name,
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            hint: Some("use `stackctl status`, or `stackctl stop` first".into()),
            detail: None,
        });
    };
    let _log_guard = crate::logs::own::init(&state, &stack.logs, opts.foreground, opts.color);
    crate::spawn::Reaper::install_subreaper().map_err(|e| {
        Error::failed(format!(
            "cannot become the reaper of the stack's processes: {e}"
        ))
    })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .thread_stack_size(256 * 1024)
        .enable_all()
        .build()
        .map_err(|e| Error::failed(format!("cannot start the runtime: {e}")))?;
    let code = rt.block_on(serve(stack, state.clone(), opts));
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(state.supervisor_pid());
    drop(lock);
    code
}

async fn serve(stack: crate::config::Stack, state: StateDir, opts: Options) -> Result<u8, Error> {
    // A killed predecessor's processes: stop them before starting anything,
    // so there is never a second copy.
    let cleared = crate::supervisor::offline::stop_all(&stack).await;
    for (name, pid) in &cleared.stopped {
        tracing::warn!(process = %name, "stopped pid {pid}, left running by a previous supervisor");
    }
    for (name, pid) in &cleared.survivors {
        tracing::error!(process = %name, "pid {pid}, left by a previous supervisor, survived SIGKILL");
    }
    let me = std::process::id() as i32;
    if let Ok(rec) = PidRecord::capture(me, "stackctl", me) {
        if let Err(e) = rec.write(&state.supervisor_pid()) {
            tracing::error!("cannot write {}: {e}", state.supervisor_pid().display());
        }
    }
    let socket = state.socket();
    let listener = crate::control::server::bind(&socket)
        .map_err(|e| Error::failed(format!("cannot listen on {}: {e}", socket.display())))?;
    if !opts.foreground {
        announce_ready();
    }
    let style = Style { color: opts.color };
    let echo: Option<Echo> = opts.foreground.then(|| foreground_echo(style));
    let sup = Supervisor::new(stack, echo);
    for (name, pid) in &cleared.stopped {
        sup.notice(
            name,
            &format!("stopped pid {pid}, left running by a supervisor that was killed"),
        );
    }
    tracing::info!(stack = %sup.stack().name, "supervisor {me} listening on {}", socket.display());

    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::failed(format!("signal: {e}")))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| Error::failed(format!("signal: {e}")))?;
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| Error::failed(format!("signal: {e}")))?;
    let mut shutdown = sup.shutdown_requested();
    let mut conns = JoinSet::new();

    if let Some((names, scale)) = opts.initial {
        let sup = sup.clone();
        tokio::spawn(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let printer = tokio::spawn(print_progress(rx, style));
            let r = sup.start(&names, &scale, false, &tx).await;
            drop(tx);
            let _ = printer.await;
            match r {
                Ok(()) => println!(
                    "{}stack {} is up (Ctrl-C stops it)",
                    style.prefix("stackctl", FOREGROUND_WIDTH),
                    sup.stack().name
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
            _ = term.recv() => begin_stop(&sup, &mut stopping, "SIGTERM", style),
            _ = int.recv() => begin_stop(&sup, &mut stopping, "SIGINT", style),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the stack file");
                let sup = sup.clone();
                tokio::spawn(async move {
                    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
                    let logger = tokio::spawn(async move {
                        while let Some(p) = rx.recv().await {
                            tracing::info!(process = %p.process, "reload: {}", p.message);
                        }
                    });
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
        }
    }
    // Let the connection that asked for the stop hear that it is done.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
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

fn begin_stop(sup: &Arc<Supervisor>, stopping: &mut bool, why: &str, style: Style) {
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

async fn print_progress(mut rx: mpsc::UnboundedReceiver<Progress>, style: Style) {
    while let Some(p) = rx.recv().await {
        if matches!(p.step, Step::Starting | Step::Stopping) {
            continue;
        }
        println!(
            "{}{}",
            style.prefix("stackctl", FOREGROUND_WIDTH),
            crate::output::progress_line(&p, style).trim_start()
        );
    }
}

/// How wide the name column of `--foreground` output is, at least.
const FOREGROUND_WIDTH: usize = 12;

fn foreground_echo(style: Style) -> Echo {
    Arc::new(move |name: &str, line: &[u8]| {
        let mut out = std::io::stdout().lock();
        let text = String::from_utf8_lossy(line);
        let _ = writeln!(out, "{}{text}", style.prefix(name, FOREGROUND_WIDTH));
    })
}
