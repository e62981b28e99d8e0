//! One-shot commands: run to completion in their own session, with an
//! optional deadline, the whole group killed at the end, and the tail of the
//! output kept. Used by `exec` probes (and, through them, the keeper's
//! prereqs), by the keeper for every command it runs (git, deploy steps,
//! `stackctl` itself, `escalate`), and by the supervisor for autoscale
//! depth commands and failure hooks (`on_failure`).
//!
//! Owns: the one-shot's life from spawn to the group kill, and its output:
//! the kept tail, stdout kept apart on request, and each line handed to the
//! caller as it comes. Must not touch: policy (what a failure means, where
//! the lines go, is the caller's).
//!
//! Theory of operation: the child is spawned like every other child (a new
//! session, so its group is its own; fds 0–2 only; reset signals) through
//! the one reaping path. One small thread per output pipe reads it and
//! passes the bytes to the awaiting task, which splits them into lines, calls
//! the caller's `on_line` for each, and keeps the tail. The task waits for
//! the first of: the exit, the deadline, or being dropped (the caller's
//! cancellation: a `select!` that loses). In every case the whole group is
//! SIGKILLed then, so nothing the command started outlives it; output still
//! in the pipe is read for a short grace (a process that left the group may
//! hold the pipe open for ever: the reading thread is then left behind, not
//! waited for).

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::{argv, child_setup, signal_group, spawn, Exit};
use crate::config::CommandSpec;

/// How a one-shot command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneshotOutcome {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
    /// Still running at the deadline; its whole group was killed.
    TimedOut,
}

impl fmt::Display for OneshotOutcome {
    /// `exited 3`, `was killed by SIGKILL`, `timed out`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OneshotOutcome::Exited(c) => write!(f, "exited {c}"),
            OneshotOutcome::Signaled(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "was killed by {}", sig.as_str()),
                Err(_) => write!(f, "was killed by signal {s}"),
            },
            OneshotOutcome::TimedOut => f.write_str("timed out"),
        }
    }
}

/// The result of [`run_oneshot`]: how it ended and the tail of its output.
#[derive(Debug, Clone)]
pub struct Oneshot {
    pub outcome: OneshotOutcome,
    /// The last [`OneshotOptions::keep`] bytes of stdout and stderr together
    /// (of stderr alone with [`OneshotOptions::split_stdout`]).
    pub output: String,
    /// With [`OneshotOptions::split_stdout`]: the last `keep` bytes of
    /// stdout. Empty otherwise.
    pub stdout: String,
}

/// How [`run_oneshot_with`] runs a command beyond what, where and with
/// which environment.
#[derive(Debug, Clone)]
pub struct OneshotOptions {
    /// Kill the whole group when it is still running after this long
    /// (`None`: no deadline; the caller may still cancel by dropping).
    pub timeout: Option<Duration>,
    /// Give stdout its own pipe, kept in [`Oneshot::stdout`] (for output a
    /// caller parses: a JSON document, a commit id), stderr alone in
    /// [`Oneshot::output`]. Lines of both still reach `on_line`.
    pub split_stdout: bool,
    /// How many bytes of each kept output to keep (the end of it).
    pub keep: usize,
    /// After the command ended and its group was killed, how long output
    /// still in the pipe is read.
    pub drain: Duration,
}

/// The default kept output: the last 8 KB.
const ONESHOT_OUTPUT_KEEP: usize = 8 * 1024;

/// A line longer than this reaches `on_line` in pieces of this size.
const ONESHOT_LINE_MAX: usize = 64 * 1024;

impl OneshotOptions {
    /// A deadline, stdout and stderr together, the last 8 KB kept.
    pub fn deadline(timeout: Duration) -> OneshotOptions {
        OneshotOptions {
            timeout: Some(timeout),
            ..OneshotOptions::default()
        }
    }
}

impl Default for OneshotOptions {
    fn default() -> Self {
        OneshotOptions {
            timeout: None,
            split_stdout: false,
            keep: ONESHOT_OUTPUT_KEEP,
            drain: Duration::from_millis(500),
        }
    }
}

/// Runs `cmd` (templates already expanded) to completion in its own
/// session, with exactly `env`, killing its whole group at `timeout`. Any
/// process it left behind in its group is killed too.
///
/// # Errors
/// When it cannot be spawned.
///
/// # Cancel safety
/// Dropping the future kills the command's group.
pub async fn run_oneshot(
    cmd: &CommandSpec,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> io::Result<Oneshot> {
    run_oneshot_with(cmd, cwd, env, &OneshotOptions::deadline(timeout), |_| {}).await
}

/// [`run_oneshot`] with options, calling `on_line` with each line of its
/// output (stdout and stderr, without the line end) as it comes.
///
/// # Errors
/// When it cannot be spawned, or its exit status was lost.
///
/// # Cancel safety
/// Dropping the future kills the command's whole group: that is how a
/// caller stops a one-shot early.
pub async fn run_oneshot_with(
    cmd: &CommandSpec,
    cwd: &Path,
    env: &[(String, String)],
    opts: &OneshotOptions,
    mut on_line: impl FnMut(&str),
) -> io::Result<Oneshot> {
    let argv = argv(cmd);
    let (pid, mut exit, pipes) = if opts.split_stdout {
        spawn_split(&argv, cwd, env)?
    } else {
        let s = spawn(&argv, cwd, env, true)?;
        let pipes = s
            .output
            .map(|fd| (Stream::Merged, fd))
            .into_iter()
            .collect();
        (s.pid, s.exit, pipes)
    };
    let guard = KillGroupOnDrop(pid);
    let (tx, mut chunks) = mpsc::unbounded_channel();
    for (stream, fd) in pipes {
        start_reader(stream, fd, tx.clone())?;
    }
    drop(tx);
    let mut out = Collected::new(opts.keep);
    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let outcome = loop {
        tokio::select! {
            r = &mut exit => break match r {
                Ok(Exit::Code(c)) => OneshotOutcome::Exited(c),
                Ok(Exit::Signal(s)) => OneshotOutcome::Signaled(s),
                Ok(Exit::Unknown) | Err(_) => return Err(io::Error::other("reaper dropped the exit status")),
            },
            () = sleep_until_opt(deadline) => break OneshotOutcome::TimedOut,
            Some(chunk) = chunks.recv() => out.take(chunk, &mut on_line),
        }
    };
    // Nothing a one-shot started may outlive it.
    drop(guard);
    let grace = tokio::time::sleep(opts.drain);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            c = chunks.recv() => match c {
                Some(chunk) => out.take(chunk, &mut on_line),
                None => break,
            },
            () = &mut grace => break,
        }
    }
    out.finish(&mut on_line);
    Ok(out.into_oneshot(outcome))
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Which pipe bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// stdout and stderr in one pipe.
    Merged,
    Stdout,
    Stderr,
}

/// Bytes read from one pipe; `None` at its end.
type Chunk = (Stream, Option<Vec<u8>>);

/// A spawned one-shot: its pid (= its group), its exit, its output pipes.
type Piped = (
    i32,
    tokio::sync::oneshot::Receiver<Exit>,
    Vec<(Stream, OwnedFd)>,
);

/// Spawns `argv` like [`spawn`], but with stdout and stderr in two pipes.
fn spawn_split(argv: &[String], cwd: &Path, env: &[(String, String)]) -> io::Result<Piped> {
    let Some((program, args)) = argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    child_setup(&mut cmd);
    let (pid, (), exit) = super::reaper::spawn_waited(|| {
        let child = cmd.spawn()?;
        Ok((child.id() as i32, ()))
    })?;
    // This process's copies of the write ends go with the command, so each
    // pipe ends when the child's side does.
    drop(cmd);
    Ok((
        pid,
        exit,
        vec![(Stream::Stdout, out_r), (Stream::Stderr, err_r)],
    ))
}

/// A thread that reads `fd` to its end and sends what it reads.
fn start_reader(stream: Stream, fd: OwnedFd, tx: mpsc::UnboundedSender<Chunk>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("oneshot-output".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            use std::io::Read;
            let mut f = std::fs::File::from(fd);
            let mut buf = vec![0u8; 8192];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send((stream, Some(buf[..n].to_vec()))).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send((stream, None));
        })
        .map(drop)
}

/// What has been read so far: per pipe, the line being assembled and the
/// kept tail.
struct Collected {
    keep: usize,
    /// Merged, or stderr when split.
    output: Pipe,
    stdout: Pipe,
}

#[derive(Default)]
struct Pipe {
    tail: Vec<u8>,
    partial: Vec<u8>,
}

impl Collected {
    fn new(keep: usize) -> Collected {
        Collected {
            keep,
            output: Pipe::default(),
            stdout: Pipe::default(),
        }
    }

    fn take(&mut self, (stream, bytes): Chunk, on_line: &mut impl FnMut(&str)) {
        let keep = self.keep;
        let pipe = match stream {
            Stream::Merged | Stream::Stderr => &mut self.output,
            Stream::Stdout => &mut self.stdout,
        };
        match bytes {
            Some(b) => pipe.push(&b, keep, on_line),
            None => pipe.flush(on_line),
        }
    }

    /// The last line of a pipe that ended without a newline (or never
    /// ended: its reader was left behind).
    fn finish(&mut self, on_line: &mut impl FnMut(&str)) {
        self.output.flush(on_line);
        self.stdout.flush(on_line);
    }

    fn into_oneshot(self, outcome: OneshotOutcome) -> Oneshot {
        Oneshot {
            outcome,
            output: self.output.kept(self.keep),
            stdout: self.stdout.kept(self.keep),
        }
    }
}

impl Pipe {
    fn push(&mut self, bytes: &[u8], keep: usize, on_line: &mut impl FnMut(&str)) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > keep.saturating_mul(2).max(keep + 4096) {
            self.tail.drain(..self.tail.len() - keep);
        }
        let mut rest = bytes;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.partial.extend_from_slice(&rest[..i]);
            self.emit(on_line);
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= ONESHOT_LINE_MAX {
            let more = self.partial.split_off(ONESHOT_LINE_MAX);
            self.emit(on_line);
            self.partial = more;
        }
    }

    fn flush(&mut self, on_line: &mut impl FnMut(&str)) {
        if !self.partial.is_empty() {
            self.emit(on_line);
        }
    }

    fn emit(&mut self, on_line: &mut impl FnMut(&str)) {
        let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
        on_line(&String::from_utf8_lossy(line));
        self.partial.clear();
    }

    fn kept(&self, keep: usize) -> String {
        let start = self.tail.len().saturating_sub(keep);
        String::from_utf8_lossy(&self.tail[start..]).into_owned()
    }
}

/// SIGKILLs a process group when dropped.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = signal_group(self.0, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::identity;

    fn sh(s: &str) -> CommandSpec {
        CommandSpec::Shell(s.into())
    }

    fn path_env() -> Vec<(String, String)> {
        vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())]
    }

    /// Waits (bounded) for `pid` to be gone.
    async fn gone(pid: i32) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while identity::is_alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        !identity::is_alive(pid)
    }

    fn read_pid(path: &Path) -> i32 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn oneshot_reports_code_and_output() {
        let r = run_oneshot(
            &sh("echo hello; echo oops >&2; exit 3"),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, OneshotOutcome::Exited(3));
        assert!(
            r.output.contains("hello") && r.output.contains("oops"),
            "{:?}",
            r.output
        );
        assert_eq!(r.stdout, "");
    }

    #[tokio::test]
    async fn oneshot_times_out_and_kills_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let r = run_oneshot(
            &sh(&script),
            Path::new("/"),
            &path_env(),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, OneshotOutcome::TimedOut);
        let pid = read_pid(&pidfile);
        assert!(gone(pid).await, "the grandchild outlived the one-shot");
    }

    #[tokio::test]
    async fn child_gets_only_fds_0_to_2_and_its_own_session() {
        let r = run_oneshot(
            &sh("ls /proc/self/fd | tr '\\n' ' '; echo; ps -o sid= -p $$; echo $$"),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let lines: Vec<&str> = r.output.lines().collect();
        let fds: Vec<&str> = lines[0].split_whitespace().collect();
        // 0, 1, 2 and the fd `ls` itself opens for /proc/self/fd.
        assert!(fds.len() <= 4, "unexpected fds: {fds:?}");
        if lines.len() >= 3 {
            assert_eq!(lines[1].trim(), lines[2].trim(), "not a session leader");
        }
    }

    #[tokio::test]
    async fn missing_program_is_an_error_not_a_panic() {
        let r = run_oneshot(
            &CommandSpec::Argv(vec!["/nonexistent/program".into()]),
            Path::new("/"),
            &path_env(),
            Duration::from_secs(5),
        )
        .await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn each_line_reaches_the_callback_as_it_comes() {
        // The second line is printed only once the first was seen: a
        // callback called at the end would never see `two`.
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let script = format!(
            "echo one; while [ ! -e {go} ]; do sleep 0.01; done; printf 'two\\r\\nthree'",
            go = go.display()
        );
        let mut lines = Vec::new();
        let r = run_oneshot_with(
            &sh(&script),
            Path::new("/"),
            &path_env(),
            &OneshotOptions::deadline(Duration::from_secs(20)),
            |l| {
                if l == "one" {
                    std::fs::write(&go, "").unwrap();
                }
                lines.push(l.to_string());
            },
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, OneshotOutcome::Exited(0));
        assert_eq!(lines, ["one", "two", "three"]);
    }

    #[tokio::test]
    async fn split_stdout_keeps_stdout_apart_and_whole() {
        let opts = OneshotOptions {
            split_stdout: true,
            keep: 1 << 20,
            ..OneshotOptions::deadline(Duration::from_secs(10))
        };
        let mut seen = 0;
        let r = run_oneshot_with(
            &sh("echo warning >&2; seq 1 20000; echo done >&2"),
            Path::new("/"),
            &path_env(),
            &opts,
            |_| seen += 1,
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, OneshotOutcome::Exited(0));
        assert_eq!(r.output, "warning\ndone\n");
        assert!(r.stdout.starts_with("1\n2\n") && r.stdout.ends_with("\n20000\n"));
        assert_eq!(seen, 20002);
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let script = script.replace(
            &format!("> {}", pidfile.display()),
            &format!("> {p}.tmp; mv {p}.tmp {p}", p = pidfile.display()),
        );
        let cmd = sh(&script);
        let env = path_env();
        let opts = OneshotOptions::default();
        let run = run_oneshot_with(&cmd, Path::new("/"), &env, &opts, |_| {});
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::select! {
                _ = run => panic!("a sleep 30 ended on its own"),
                () = async {
                    while !pidfile.exists() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                } => {}
            }
        })
        .await;
        assert!(waited.is_ok(), "the pid file never appeared");
        let pid = read_pid(&pidfile);
        assert!(
            gone(pid).await,
            "the grandchild outlived the cancelled one-shot"
        );
    }

    #[test]
    fn outcomes_read_as_words() {
        assert_eq!(OneshotOutcome::Exited(3).to_string(), "exited 3");
        assert_eq!(
            OneshotOutcome::Signaled(9).to_string(),
            "was killed by SIGKILL"
        );
        assert_eq!(OneshotOutcome::TimedOut.to_string(), "timed out");
    }
}
