//! The anchor's event loop and everything it keeps: its children and
//! their pipes and logs, held fds, kept values, its connections, and the
//! supervisor it launches. One thread, one `poll(2)`.
//!
//! Owns: the anchor's state. Must not touch: policy (see the module doc of
//! `anchor`).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    accept4, bind, getsockopt, listen, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    UnixAddr,
};
use nix::sys::time::TimeSpec;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use regex::Regex;

use super::proto::{
    self, ChildInfo, ExitRec, FromAnchor, LogTarget, Outbox, Role, RunMark, SpawnReq, ToAnchor,
};
use super::{dup, nonblocking, note, Options};
use crate::config::LogSettings;
use crate::error::Error;
use crate::logs::{marker, Drain, Read, Sink};
use crate::output::Style;
use crate::spawn::{self, identity, Output};
use crate::state::{Held, StateDir};

/// How long an exit waits for its child's output to be drained.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// A supervisor that lived less than this is relaunched after a delay.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const RELAUNCH_MIN: Duration = Duration::from_secs(1);
const RELAUNCH_MAX: Duration = Duration::from_secs(30);
/// Reads of one pipe per turn of the loop, so that one chatty process
/// cannot starve the others.
const READS_PER_TURN: usize = 8;
/// The pipe's capacity where the kernel allows: bigger chunks, fewer
/// wake-ups, and more room while nothing reads (see `logs` on the limit).
const PIPE_SIZE: i32 = 256 * 1024;

/// One connection: a supervisor or a client.
struct Conn {
    fd: OwnedFd,
    /// The peer's pid (`SO_PEERCRED`, at accept).
    peer: i32,
    role: Option<Role>,
    out: Outbox,
    /// What a supervisor said it does when it goes.
    bye: Option<(bool, Option<PathBuf>)>,
    /// A client waiting (after `Launch`) for a supervisor that serves.
    waits_launch: bool,
    dead: bool,
}

/// A pipe being drained into an instance's log.
struct Pipe {
    fd: OwnedFd,
    drain: Drain,
    instance: String,
}

/// A process of the stack.
struct Child {
    instance: String,
    start_ticks: u64,
    log: LogTarget,
    watch_src: Option<String>,
    watch: Option<Regex>,
    /// As `SpawnReq::step`.
    step: Option<u32>,
    matched: bool,
    exit: Option<ExitRec>,
    /// The exit was sent to the connected supervisor.
    reported: bool,
    /// The supervisor is done with it: forget it once it is gone, unsaid.
    acked: bool,
    /// The exit is reported at this time even if the pipe is still open.
    report_due: Option<Instant>,
    /// `None` once it reached its end.
    pipe: Option<Pipe>,
    /// For a process that is not our child (adopted after an anchor died).
    pidfd: Option<OwnedFd>,
    /// Its run markers in its log, if it has them.
    mark: Option<RunMark>,
    /// When it started, for the end marker's "ran for".
    started: Instant,
    /// The end marker is written.
    end_marked: bool,
}

impl Child {
    fn info(&self, pid: i32) -> ChildInfo {
        ChildInfo {
            instance: self.instance.clone(),
            pid,
            start_ticks: self.start_ticks,
            matched: self.matched,
            exit: self.exit,
            log: self.log.clone(),
            watch: self.watch_src.clone(),
            step: self.step,
            mark: self.mark.clone(),
        }
    }
}

/// When a process that started at `start_ticks` started, as an `Instant`
/// (now, when `/proc` cannot say).
fn started_at(start_ticks: u64) -> Instant {
    identity::uptime_of(start_ticks)
        .and_then(|up| Instant::now().checked_sub(up))
        .unwrap_or_else(Instant::now)
}

/// An instance's log, shared by its successive processes.
struct Log {
    sink: Sink,
    target: LogTarget,
    /// The sink's error generation last told to the supervisor.
    told: u64,
}

/// What is ready after a `poll`.
#[derive(Clone, Copy)]
enum Slot {
    Listener,
    Signal,
    Conn(usize),
    Pipe(i32),
    PidFd(i32),
    Lingering(u64),
    Cgroups,
}

pub(super) struct House {
    opts: Options,
    state: StateDir,
    _lock: Held,
    listener: OwnedFd,
    signals: SignalFd,
    conns: Vec<Conn>,
    /// Index in `conns` of the connected supervisor.
    supervisor: Option<usize>,
    /// The connected supervisor answers on its control socket.
    serving: bool,
    children: BTreeMap<i32, Child>,
    /// Pipes of processes already forgotten that something still holds open.
    lingering: BTreeMap<u64, Pipe>,
    next_lingering: u64,
    logs: BTreeMap<String, Log>,
    held: BTreeMap<String, OwnedFd>,
    kept: BTreeMap<String, String>,
    /// The supervisor this anchor launched, while it runs, and since when.
    launched: Option<(i32, Instant)>,
    relaunch_at: Option<Instant>,
    relaunch_delay: Duration,
    /// Supervisors in a row that died young.
    young_deaths: u32,
    /// The supervisor's connection ended without a word and it is our
    /// child: its exit status decides when to relaunch.
    awaiting_exit: bool,
    /// Our supervisor's exit status, seen before the end of its connection
    /// (both come in one poll, in either order): that end decides.
    launched_exit: Option<ExitRec>,
    /// Launch no more supervisors; end once no process is left.
    retiring: bool,
    /// The binary the next launch runs (an upgrade changes it).
    exe: PathBuf,
    /// Re-execute from this binary once the supervisor has gone.
    reexec: Option<PathBuf>,
    scratch: Vec<u8>,
    recv_buf: Vec<u8>,
    echo: Option<Style>,
    /// The stack's cgroup tree, while there is one (decided as `serve`
    /// begins, off the start's path: see `cgroups`).
    cgroups: Option<super::cgroups::Cgroups>,
}

impl House {
    pub(super) fn new(opts: Options, state: StateDir, lock: Held) -> Result<House, Error> {
        let listener = listen_on(&state)?;
        let signals =
            signal_fd().map_err(|e| Error::failed(format!("cannot watch signals: {e}")))?;
        let echo = opts.echo.map(|color| Style { color });
        let exe = opts.exe.clone();
        let mut house = House {
            launched: None,
            relaunch_at: None,
            relaunch_delay: Duration::ZERO,
            young_deaths: 0,
            awaiting_exit: false,
            launched_exit: None,
            retiring: false,
            exe,
            reexec: None,
            opts,
            state,
            _lock: lock,
            listener,
            signals,
            conns: Vec::new(),
            supervisor: None,
            serving: false,
            children: BTreeMap::new(),
            lingering: BTreeMap::new(),
            next_lingering: 0,
            logs: BTreeMap::new(),
            held: BTreeMap::new(),
            kept: BTreeMap::new(),
            scratch: vec![0u8; crate::logs::READ_BUF],
            recv_buf: vec![0u8; proto::MAX_MESSAGE],
            echo,
            cgroups: None,
        };
        if house.opts.launch {
            // The launching command waits for the supervisor's `ready` on
            // our stdout: it is the supervisor's stdout.
            let ready = std::io::stdout().as_fd().try_clone_to_owned().ok();
            house.launch(ready);
            detach_stdout();
        } else {
            // Launched by a supervisor, which waits for our `ready`.
            announce_ready();
            match house.echo {
                // `--foreground`: our stderr is that terminal (or whatever
                // the foreground supervisor's stdout is): echo there.
                Some(_) => {
                    let _ = nix::unistd::dup2(2, 1);
                }
                None => detach_stdout(),
            }
        }
        Ok(house)
    }

    /// Runs until done.
    pub(super) fn serve(&mut self) {
        let known: Vec<(String, i32)> = self
            .children
            .iter()
            .filter(|(_, c)| c.exit.is_none())
            .map(|(pid, c)| (c.instance.clone(), *pid))
            .collect();
        self.cgroups = super::cgroups::Cgroups::start(&self.state, &known);
        let me = std::process::id() as i32;
        match identity::PidRecord::capture(me, "anchor", me) {
            Ok(rec) => {
                if let Err(e) = rec.write(&self.state.anchor_pid()) {
                    note(
                        "ERROR",
                        &format!("cannot write {}: {e}", self.state.anchor_pid().display()),
                    );
                }
            }
            Err(e) => note("ERROR", &format!("cannot read its own identity: {e}")),
        }
        note(
            "INFO",
            &format!("anchor {me} serving {}", self.state.root().display()),
        );
        while !self.done() {
            let timeout = self.next_deadline();
            self.turn(timeout);
            self.on_timers();
            self.conns_cleanup();
        }
        note(
            "INFO",
            "no process left and no supervisor wanted: anchor exiting",
        );
        if let Some(c) = &self.cgroups {
            c.end();
        }
        let _ = std::fs::remove_file(self.state.anchor_socket());
        identity::PidRecord::remove(&self.state.anchor_pid());
    }

    /// Retired, no supervisor, and no process left running. An exit that
    /// no supervisor acknowledged does not keep it: none will come for it
    /// (after a `stop` that ran without a supervisor, it waited forever).
    fn done(&self) -> bool {
        self.retiring
            && self.supervisor.is_none()
            && self.children.values().all(|c| c.exit.is_some())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let pipes = self
            .children
            .values()
            .filter_map(|c| c.pipe.as_ref())
            .chain(self.lingering.values())
            .flat_map(|p| [p.drain.due(), p.drain.resting()])
            .flatten();
        let reports = self.children.values().filter_map(|c| c.report_due);
        pipes.chain(reports).chain(self.relaunch_at).min()
    }

    /// One `poll` and what it found.
    fn turn(&mut self, deadline: Option<Instant>) {
        let ready = {
            let mut entries: Vec<(Slot, BorrowedFd<'_>, PollFlags)> = vec![
                (Slot::Listener, self.listener.as_fd(), PollFlags::POLLIN),
                (Slot::Signal, self.signals.as_fd(), PollFlags::POLLIN),
            ];
            for (i, c) in self.conns.iter().enumerate() {
                let mut flags = PollFlags::POLLIN;
                if !c.out.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                entries.push((Slot::Conn(i), c.fd.as_fd(), flags));
            }
            for (pid, c) in &self.children {
                if let Some(p) = c.pipe.as_ref().filter(|p| p.drain.resting().is_none()) {
                    entries.push((Slot::Pipe(*pid), p.fd.as_fd(), PollFlags::POLLIN));
                }
                if let Some(fd) = &c.pidfd {
                    entries.push((Slot::PidFd(*pid), fd.as_fd(), PollFlags::POLLIN));
                }
            }
            for (id, p) in self
                .lingering
                .iter()
                .filter(|(_, p)| p.drain.resting().is_none())
            {
                entries.push((Slot::Lingering(*id), p.fd.as_fd(), PollFlags::POLLIN));
            }
            if let Some(fd) = self.cgroups.as_ref().and_then(|c| c.fd()) {
                entries.push((Slot::Cgroups, fd, PollFlags::POLLIN));
            }
            let mut fds: Vec<PollFd<'_>> = entries
                .iter()
                .map(|(_, fd, flags)| PollFd::new(*fd, *flags))
                .collect();
            let slots: Vec<Slot> = entries.iter().map(|(s, _, _)| *s).collect();
            // To the microsecond: a streaming pipe's rest is shorter than
            // a millisecond (`logs::Drain`).
            let timeout = deadline
                .map(|t| TimeSpec::from_duration(t.saturating_duration_since(Instant::now())));
            match ppoll(&mut fds, timeout, None) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => Vec::new(),
                Ok(_) => slots
                    .into_iter()
                    .zip(fds.iter())
                    .filter_map(|(s, f)| f.revents().filter(|r| !r.is_empty()).map(|r| (s, r)))
                    .collect(),
                Err(e) => {
                    note("ERROR", &format!("poll failed: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    Vec::new()
                }
            }
        };
        for (slot, revents) in ready {
            match slot {
                Slot::Listener => self.accept(),
                Slot::Signal => self.on_signals(),
                Slot::Conn(i) => {
                    if revents.intersects(PollFlags::POLLOUT) {
                        self.flush(i);
                    }
                    if revents
                        .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                    {
                        self.read_conn(i);
                    }
                }
                Slot::Pipe(pid) => self.drain_child(pid),
                Slot::PidFd(pid) => self.foreign_exited(pid),
                Slot::Lingering(id) => self.drain_lingering(id),
                Slot::Cgroups => {
                    if let Some(c) = self.cgroups.as_mut() {
                        c.on_events();
                    }
                }
            }
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<i32> = self
            .children
            .iter()
            .filter(|(_, c)| c.report_due.is_some_and(|t| t <= now))
            .map(|(p, _)| *p)
            .collect();
        for pid in due {
            self.report_exit(pid);
        }
        let rested = |p: &Pipe| p.drain.resting().is_some_and(|t| t <= now);
        let pipes: Vec<i32> = self
            .children
            .iter()
            .filter(|(_, c)| c.pipe.as_ref().is_some_and(rested))
            .map(|(p, _)| *p)
            .collect();
        for pid in pipes {
            self.drain_child(pid);
        }
        let lingering: Vec<u64> = self
            .lingering
            .iter()
            .filter(|(_, p)| rested(p))
            .map(|(id, _)| *id)
            .collect();
        for id in lingering {
            self.drain_lingering(id);
        }
        for c in self.children.values_mut() {
            if let Some(p) = c
                .pipe
                .as_mut()
                .filter(|p| p.drain.due().is_some_and(|t| t <= now))
            {
                if let Some(log) = self.logs.get_mut(&p.instance) {
                    p.drain.flush_partial(&mut log.sink);
                }
            }
        }
        for p in self.lingering.values_mut() {
            if p.drain.due().is_some_and(|t| t <= now) {
                if let Some(log) = self.logs.get_mut(&p.instance) {
                    p.drain.flush_partial(&mut log.sink);
                }
            }
        }
        if self.relaunch_at.is_some_and(|t| t <= now) {
            self.relaunch_at = None;
            self.launch(None);
        }
    }

    // ---- connections ----

    fn accept(&mut self) {
        loop {
            let raw = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            // SAFETY: accept4 just returned this fd; it is ours alone.
            #[allow(unsafe_code)]
            let fd = unsafe { super::owned(raw) };
            let cred = getsockopt(&fd, sockopt::PeerCredentials).ok();
            let Some(cred) = cred.filter(|c| c.uid() == nix::unistd::geteuid().as_raw()) else {
                note("WARN", "refused a connection from another user");
                continue;
            };
            self.conns.push(Conn {
                fd,
                peer: cred.pid(),
                role: None,
                out: Outbox::default(),
                bye: None,
                waits_launch: false,
                dead: false,
            });
        }
    }

    fn read_conn(&mut self, i: usize) {
        loop {
            let Some(c) = self.conns.get(i).filter(|c| !c.dead) else {
                return;
            };
            match proto::recv::<ToAnchor>(c.fd.as_fd(), &mut self.recv_buf) {
                Ok((msg, fds)) => self.on_message(i, msg, fds),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::UnexpectedEof {
                        note("WARN", &format!("dropping a connection: {e}"));
                    }
                    self.conn_gone(i);
                    return;
                }
            }
        }
    }

    fn send(&mut self, i: usize, msg: &FromAnchor, fds: Vec<OwnedFd>) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if let Err(e) = c.out.push(msg, fds) {
            note("ERROR", &format!("cannot encode a message: {e}"));
        }
        self.flush(i);
    }

    fn tell_supervisor(&mut self, msg: &FromAnchor, fds: Vec<OwnedFd>) -> bool {
        match self.supervisor {
            Some(i) => {
                self.send(i, msg, fds);
                true
            }
            None => false,
        }
    }

    fn flush(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.dead {
            return;
        }
        if let Err(e) = c.out.flush(c.fd.as_fd()) {
            note("WARN", &format!("a connection failed: {e}"));
            self.conn_gone(i);
        }
    }

    fn conn_gone(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.dead {
            return;
        }
        c.dead = true;
        let bye = c.bye.take();
        let peer = c.peer;
        if self.supervisor != Some(i) {
            return;
        }
        self.supervisor = None;
        self.serving = false;
        for ch in self.children.values_mut() {
            ch.reported = false;
        }
        if let Some(exe) = self.reexec.take() {
            self.exe = exe.clone();
            self.reexec_from(&exe);
            // Only reached when the exec failed: go on with this binary,
            // and launch the new supervisor anyway.
            self.relaunch_delay = Duration::ZERO;
            self.relaunch_at = Some(Instant::now());
            return;
        }
        match bye {
            Some((true, exe)) => {
                if let Some(exe) = exe {
                    self.exe = exe;
                }
                note(
                    "INFO",
                    "the supervisor left for an upgrade: launching the new one",
                );
                self.relaunch_delay = Duration::ZERO;
                self.relaunch_at = Some(Instant::now());
            }
            Some((false, _)) => {
                note("INFO", "the supervisor stopped the stack");
                self.retiring = true;
            }
            None if self.retiring => {}
            // Our own child: how it ended (its exit status) decides.
            None if self.launched.is_some_and(|(p, _)| p == peer) => {
                match self.launched_exit.take() {
                    Some(exit) => {
                        self.schedule_relaunch(Some(exit));
                        self.launched = None;
                    }
                    None => self.awaiting_exit = true,
                }
            }
            None => self.schedule_relaunch(None),
        }
    }

    /// A supervisor went away without a word: relaunch one, at once unless
    /// they keep crashing young (`exit` is how our child ended, when it was
    /// ours). One killed with SIGKILL (an operator, the OOM killer) is not
    /// crashing: it is relaunched at once every time.
    fn schedule_relaunch(&mut self, exit: Option<ExitRec>) {
        let lived = self.launched.map(|(_, t)| t.elapsed());
        (self.young_deaths, self.relaunch_delay) = relaunch_after(exit, lived, self.young_deaths);
        let how = exit.map_or_else(String::new, |e| {
            format!(" ({})", crate::spawn::Exit::from(e))
        });
        note(
            "WARN",
            &format!(
                "the supervisor went away without a word{how}; relaunching it in {}",
                humantime::format_duration(self.relaunch_delay)
            ),
        );
        self.relaunch_at = Some(Instant::now() + self.relaunch_delay);
    }

    /// Drops dead connections (indices shift: `supervisor` follows).
    fn conns_cleanup(&mut self) {
        if !self.conns.iter().any(|c| c.dead) {
            return;
        }
        let sup = self.supervisor;
        let mut map = Vec::with_capacity(self.conns.len());
        let mut kept = Vec::new();
        for c in std::mem::take(&mut self.conns) {
            if c.dead {
                map.push(None);
            } else {
                map.push(Some(kept.len()));
                kept.push(c);
            }
        }
        self.conns = kept;
        self.supervisor = sup.and_then(|i| map.get(i).copied().flatten());
    }

    fn on_message(&mut self, i: usize, msg: ToAnchor, mut fds: Vec<OwnedFd>) {
        let is_supervisor = self.supervisor == Some(i);
        match msg {
            ToAnchor::Hello { role, version } => self.hello(i, role, version),
            ToAnchor::Spawn(req) if is_supervisor => self.spawn(i, req),
            ToAnchor::Ack { pid } if is_supervisor => self.forget(pid),
            ToAnchor::Put { key, value } if is_supervisor => {
                self.kept.insert(key, value);
            }
            ToAnchor::Del { key } if is_supervisor => {
                self.kept.remove(&key);
            }
            ToAnchor::Hold { key } if is_supervisor => {
                if let Some(fd) = fds.pop() {
                    self.held.insert(key, fd);
                }
            }
            ToAnchor::Release { key } if is_supervisor => {
                self.held.remove(&key);
            }
            ToAnchor::Adopt(info) if is_supervisor => self.adopt(info, fds.pop()),
            ToAnchor::Bye { relaunch, exe } if is_supervisor => {
                if let Some(c) = self.conns.get_mut(i) {
                    c.bye = Some((relaunch, exe));
                }
            }
            ToAnchor::Launch => {
                if self.serving {
                    self.send(i, &FromAnchor::Done, Vec::new());
                    return;
                }
                if let Some(c) = self.conns.get_mut(i) {
                    c.waits_launch = true;
                }
                if self.supervisor.is_none() {
                    self.retiring = false;
                    self.relaunch_delay = Duration::ZERO;
                    self.relaunch_at = None;
                    self.launch(None);
                }
            }
            ToAnchor::Serving if is_supervisor => {
                self.serving = true;
                let waiting: Vec<usize> = self
                    .conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.waits_launch && !c.dead)
                    .map(|(i, _)| i)
                    .collect();
                for w in waiting {
                    if let Some(c) = self.conns.get_mut(w) {
                        c.waits_launch = false;
                    }
                    self.send(w, &FromAnchor::Done, Vec::new());
                }
            }
            ToAnchor::Retire => {
                note("INFO", "retired: no supervisor will be launched");
                self.retiring = true;
                self.relaunch_at = None;
                self.send(i, &FromAnchor::Done, Vec::new());
            }
            ToAnchor::Upgrade { exe } if is_supervisor => {
                note("INFO", &format!("told to upgrade to {}", exe.display()));
                self.reexec = Some(exe);
            }
            other => {
                let reason = format!("`{}` is only for the connected supervisor", kind_of(&other));
                self.send(i, &FromAnchor::Refused { reason }, Vec::new());
            }
        }
    }

    fn hello(&mut self, i: usize, role: Role, version: u32) {
        let welcome = FromAnchor::Welcome {
            version: proto::VERSION,
            anchor_pid: std::process::id() as i32,
            stackctl: env!("CARGO_PKG_VERSION").to_string(),
        };
        if version != proto::VERSION {
            let reason = format!(
                "this anchor speaks anchor protocol v{}, the other side v{version} (stackctl {}); run `stackctl upgrade` with the new binary",
                proto::VERSION,
                env!("CARGO_PKG_VERSION")
            );
            self.send(i, &FromAnchor::Refused { reason }, Vec::new());
            return;
        }
        if let Role::Supervisor { pid } = role {
            if let Some(other) = self.supervisor.filter(|s| *s != i) {
                let who = match self.conns.get(other).and_then(|c| c.role.clone()) {
                    Some(Role::Supervisor { pid }) => format!(" (pid {pid})"),
                    _ => String::new(),
                };
                let reason = format!("a supervisor{who} is already connected");
                self.send(i, &FromAnchor::Refused { reason }, Vec::new());
                return;
            }
            note("INFO", &format!("supervisor {pid} connected"));
            self.supervisor = Some(i);
            self.relaunch_at = None;
            self.retiring = false;
            if let Some(c) = self.conns.get_mut(i) {
                c.role = Some(Role::Supervisor { pid });
            }
            self.send(i, &welcome, Vec::new());
            self.send_inventory(i);
        } else {
            if let Some(c) = self.conns.get_mut(i) {
                c.role = Some(Role::Client);
            }
            self.send(i, &welcome, Vec::new());
        }
    }

    /// Everything the new supervisor needs: every child (with its pipe),
    /// every held fd, every kept value.
    fn send_inventory(&mut self, i: usize) {
        let children: Vec<(ChildInfo, Option<OwnedFd>)> = self
            .children
            .iter()
            .map(|(pid, c)| (c.info(*pid), c.pipe.as_ref().and_then(|p| dup(&p.fd))))
            .collect();
        for (info, fd) in children {
            self.send(i, &FromAnchor::Child(info), fd.into_iter().collect());
        }
        let held: Vec<(String, Option<OwnedFd>)> = self
            .held
            .iter()
            .map(|(k, fd)| (k.clone(), dup(fd)))
            .collect();
        for (key, fd) in held {
            self.send(i, &FromAnchor::Held { key }, fd.into_iter().collect());
        }
        let kept: Vec<(String, String)> = self
            .kept
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in kept {
            self.send(i, &FromAnchor::Value { key, value }, Vec::new());
        }
        for c in self.children.values_mut() {
            c.reported = c.exit.is_some();
        }
        self.send(i, &FromAnchor::Inventoried, Vec::new());
    }

    // ---- children ----

    fn spawn(&mut self, i: usize, req: SpawnReq) {
        let mut folder = self.cgroups.as_mut().and_then(|c| c.folder(&req.instance));
        let held = &self.held;
        let cgroups = &mut self.cgroups;
        let spawned = match passed(held, &req.listen) {
            Ok(pass) => {
                let spawn = |cgroup: Option<&OwnedFd>| {
                    let cgroup = cgroup.map(AsFd::as_fd);
                    spawn::spawn_unreaped(&req.argv, &req.cwd, &req.env, true, &pass, cgroup)
                };
                match spawn(folder.as_ref()) {
                    // The kernel would not fork into the cgroup (nothing
                    // ran): the promise is withdrawn, and it runs outside.
                    Err(e) if spawn::is_not_into_cgroup(&e) => {
                        if let Some(c) = cgroups.as_mut() {
                            c.refused(&req.instance, &e);
                        }
                        folder = None;
                        spawn(None)
                    }
                    other => other,
                }
                .map_err(|e| e.to_string())
            }
            Err(missing) => Err(format!(
                "the anchor holds no socket under `{missing}` (it was released)"
            )),
        };
        let (pid, read_end) = match spawned {
            Ok(r) => r,
            Err(error) => {
                self.send(
                    i,
                    &FromAnchor::SpawnFailed { id: req.id, error },
                    Vec::new(),
                );
                return;
            }
        };
        if let (Some(c), Some(_)) = (self.cgroups.as_mut(), folder) {
            c.spawned(&req.instance);
        }
        let start_ticks = identity::proc_stat(pid).map_or(0, |s| s.start_ticks);
        let pipe = read_end.and_then(|fd| self.pipe_for(&req.instance, fd));
        let copy = pipe.as_ref().and_then(|p| dup(&p.fd));
        self.ensure_log(&req.instance, &req.log);
        // Before anything it writes: its output waits in the pipe until
        // this loop drains it.
        if let Some(m) = &req.mark {
            let line = marker::started(&req.instance, m.what.as_deref(), pid, m.attempt);
            self.write_marker(&req.instance, &line);
        }
        let watch = req.watch.as_deref().and_then(|w| Regex::new(w).ok());
        self.children.insert(
            pid,
            Child {
                instance: req.instance,
                start_ticks,
                log: req.log,
                watch_src: req.watch,
                watch,
                step: req.step,
                matched: false,
                exit: None,
                reported: false,
                acked: false,
                report_due: None,
                pipe,
                pidfd: None,
                mark: req.mark,
                started: Instant::now(),
                end_marked: false,
            },
        );
        self.send(
            i,
            &FromAnchor::Spawned {
                id: req.id,
                pid,
                start_ticks,
            },
            copy.into_iter().collect(),
        );
    }

    fn pipe_for(&self, instance: &str, fd: OwnedFd) -> Option<Pipe> {
        if let Err(e) = nonblocking(&fd) {
            note(
                "ERROR",
                &format!("{instance}: cannot use its output pipe: {e}"),
            );
            return None;
        }
        // Bigger chunks, fewer wake-ups; an unprivileged limit is fine to hit.
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
        );
        Some(Pipe {
            fd,
            drain: Drain::new(),
            instance: instance.to_string(),
        })
    }

    fn ensure_log(&mut self, instance: &str, target: &LogTarget) {
        if self.logs.get(instance).is_some_and(|l| &l.target == target) {
            return;
        }
        let settings = LogSettings {
            max_size: target.max_size,
            keep: target.keep,
            timestamps: target.timestamps,
            markers: true,
        };
        match Sink::open(target.path.clone(), settings) {
            Ok(sink) => {
                let told = u64::MAX;
                self.logs.insert(
                    instance.to_string(),
                    Log {
                        sink,
                        target: target.clone(),
                        told,
                    },
                );
                self.tell_log_state(instance);
            }
            Err(e) => note(
                "ERROR",
                &format!("{instance}: cannot open {}: {e}", target.path.display()),
            ),
        }
    }

    /// Writes a run marker into `instance`'s log, on a line of its own.
    fn write_marker(&mut self, instance: &str, line: &str) {
        if let Some(log) = self.logs.get_mut(instance) {
            log.sink.end_line();
            log.sink.write(line.as_bytes());
        }
    }

    /// The end marker of `pid`, once: after its output (what is still held
    /// of a pipe something else keeps open is written first).
    fn mark_end(&mut self, pid: i32) {
        let Some(c) = self.children.get_mut(&pid) else {
            return;
        };
        let (Some(m), Some(exit), false) = (c.mark.clone(), c.exit, c.end_marked) else {
            return;
        };
        c.end_marked = true;
        let instance = c.instance.clone();
        if let (Some(p), Some(log)) = (c.pipe.as_mut(), self.logs.get_mut(&instance)) {
            p.drain.flush_partial(&mut log.sink);
        }
        let line = marker::ended(
            &instance,
            m.what.as_deref(),
            pid,
            m.attempt,
            exit.into(),
            c.started.elapsed(),
        );
        self.write_marker(&instance, &line);
    }

    fn tell_log_state(&mut self, instance: &str) {
        let Some(log) = self.logs.get_mut(instance) else {
            return;
        };
        let generation = log.sink.generation();
        if generation == log.told {
            return;
        }
        let first = log.told == u64::MAX;
        log.told = generation;
        let error = log.sink.error();
        if first && error.is_none() {
            return;
        }
        let msg = FromAnchor::LogState {
            instance: instance.to_string(),
            error,
        };
        self.tell_supervisor(&msg, Vec::new());
    }

    fn drain_child(&mut self, pid: i32) {
        let Some(c) = self.children.get_mut(&pid) else {
            return;
        };
        let Some(p) = c.pipe.as_mut() else {
            return;
        };
        let Some(log) = self.logs.get_mut(&p.instance) else {
            c.pipe = None;
            return;
        };
        let echo = self.echo;
        let mut matched_now = false;
        let (watch, matched) = (c.watch.as_ref(), c.matched);
        let instance = p.instance.clone();
        let mut on_line = |line: &[u8]| {
            if let Some(style) = echo {
                echo_line(style, &instance, line);
            }
            if !matched && !matched_now {
                if let Some(re) = watch {
                    matched_now = re.is_match(&String::from_utf8_lossy(line));
                }
            }
        };
        let mut ended = false;
        for _ in 0..READS_PER_TURN {
            match p
                .drain
                .read(p.fd.as_fd(), &mut self.scratch, &mut log.sink, &mut on_line)
            {
                Ok(Read::Data) => {}
                Ok(Read::Empty) => break,
                Ok(Read::Eof) | Err(_) => {
                    p.drain.finish(&mut log.sink, &mut on_line);
                    ended = true;
                    break;
                }
            }
        }
        if matched_now {
            c.matched = true;
        }
        if ended {
            c.pipe = None;
        }
        let exit_waiting = ended && c.exit.is_some() && !c.reported;
        self.tell_log_state(&instance);
        if matched_now {
            self.tell_supervisor(&FromAnchor::Matched { pid }, Vec::new());
        }
        if exit_waiting {
            self.report_exit(pid);
        }
    }

    fn drain_lingering(&mut self, id: u64) {
        let Some(p) = self.lingering.get_mut(&id) else {
            return;
        };
        let Some(log) = self.logs.get_mut(&p.instance) else {
            self.lingering.remove(&id);
            return;
        };
        let echo = self.echo;
        let instance = p.instance.clone();
        let mut on_line = |line: &[u8]| {
            if let Some(style) = echo {
                echo_line(style, &instance, line);
            }
        };
        for _ in 0..READS_PER_TURN {
            match p
                .drain
                .read(p.fd.as_fd(), &mut self.scratch, &mut log.sink, &mut on_line)
            {
                Ok(Read::Data) => {}
                Ok(Read::Empty) => return,
                Ok(Read::Eof) | Err(_) => {
                    p.drain.finish(&mut log.sink, &mut on_line);
                    self.lingering.remove(&id);
                    return;
                }
            }
        }
    }

    fn on_signals(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => self.reap(),
                    Ok(Signal::SIGTERM) => {
                        note("INFO", "SIGTERM: retiring (the processes keep running; `stackctl stop` stops them)");
                        self.retiring = true;
                        self.relaunch_at = None;
                    }
                    _ => {}
                },
                Ok(None) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), ExitRec::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid.as_raw(), ExitRec::Signal(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    note("ERROR", &format!("waitpid failed: {e}"));
                    return;
                }
            };
            self.exited(pid, exit);
        }
    }

    fn exited(&mut self, pid: i32, exit: ExitRec) {
        if self.launched.is_some_and(|(p, _)| p == pid) {
            let connected = self
                .supervisor
                .and_then(|i| self.conns.get(i))
                .is_some_and(|c| c.peer == pid && !c.dead);
            if connected {
                // Its connection's end is in this same poll, or the next.
                self.launched_exit = Some(exit);
                return;
            }
            if self.awaiting_exit {
                self.awaiting_exit = false;
                self.schedule_relaunch(Some(exit));
            } else if self.supervisor.is_none() && self.relaunch_at.is_none() && !self.retiring {
                // Exited before it ever connected (a broken stack file, a
                // bad binary): try again later.
                self.relaunch_delay = (self.relaunch_delay * 2).clamp(RELAUNCH_MIN, RELAUNCH_MAX);
                note("WARN", &format!("the supervisor {pid} exited ({}) before it connected; relaunching it in {}", crate::spawn::Exit::from(exit), humantime::format_duration(self.relaunch_delay)));
                self.relaunch_at = Some(Instant::now() + self.relaunch_delay);
            }
            self.launched = None;
            return;
        }
        let Some(c) = self.children.get_mut(&pid) else {
            // An orphan of a child (a daemon of a task): reaped, nothing more.
            return;
        };
        c.exit = Some(exit);
        if c.pipe.is_some() {
            c.report_due = Some(Instant::now() + DRAIN_WAIT);
            // Usually the pipe ended with the process: see it now.
            self.drain_child(pid);
        } else {
            self.report_exit(pid);
        }
    }

    fn foreign_exited(&mut self, pid: i32) {
        if let Some(c) = self.children.get_mut(&pid) {
            c.pidfd = None;
            if c.exit.is_none() {
                self.exited(pid, ExitRec::Unknown);
            }
        }
    }

    fn report_exit(&mut self, pid: i32) {
        self.mark_end(pid);
        let Some(c) = self.children.get_mut(&pid) else {
            return;
        };
        c.report_due = None;
        if c.acked && c.exit.is_some() {
            self.forget(pid);
            return;
        }
        let Some(exit) = c.exit.filter(|_| !c.reported) else {
            return;
        };
        if self.tell_supervisor(&FromAnchor::Exited { pid, exit }, Vec::new()) {
            if let Some(c) = self.children.get_mut(&pid) {
                c.reported = true;
            }
        }
    }

    /// The supervisor acted on the exit of `pid`: forget it; its pipe, if
    /// something still holds it, is drained to its end.
    fn forget(&mut self, pid: i32) {
        let Some(c) = self.children.get_mut(&pid) else {
            return;
        };
        if c.exit.is_none() {
            c.acked = true;
            return;
        }
        if let Some(mut c) = self.children.remove(&pid) {
            if let Some(p) = c.pipe.take() {
                self.lingering.insert(self.next_lingering, p);
                self.next_lingering += 1;
            }
        }
    }

    /// A live process whose anchor died, handed over by the supervisor.
    fn adopt(&mut self, info: ChildInfo, pipe: Option<OwnedFd>) {
        let alive = identity::proc_stat(info.pid)
            .is_ok_and(|s| s.start_ticks == info.start_ticks && s.state != 'Z');
        let pidfd = if alive { pidfd_open(info.pid) } else { None };
        if let (Some(c), true) = (self.cgroups.as_mut(), alive) {
            c.adopted(&info.instance, info.pid);
        }
        let pipe = pipe.and_then(|fd| self.pipe_for(&info.instance, fd));
        self.ensure_log(&info.instance, &info.log);
        let watch = info.watch.as_deref().and_then(|w| Regex::new(w).ok());
        let gone = pidfd.is_none();
        self.children.insert(
            info.pid,
            Child {
                instance: info.instance,
                start_ticks: info.start_ticks,
                log: info.log,
                watch_src: info.watch,
                watch,
                step: info.step,
                matched: info.matched,
                exit: info.exit,
                reported: info.exit.is_some(),
                acked: false,
                report_due: None,
                pipe,
                pidfd,
                started: started_at(info.start_ticks),
                // An exit the old anchor knew of was marked by it.
                end_marked: info.exit.is_some(),
                mark: info.mark,
            },
        );
        if gone && info.exit.is_none() {
            self.exited(info.pid, ExitRec::Unknown);
        }
    }

    // ---- the supervisor ----

    fn launch(&mut self, ready: Option<OwnedFd>) {
        if self.retiring {
            return;
        }
        if let Some((pid, _)) = self.launched {
            if identity::is_alive(pid) {
                // Still starting (or holding the lock): not a second one.
                return;
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.own_log());
        let (Ok(log), Some(stdout)) = (log, ready.or_else(dev_null)) else {
            note(
                "ERROR",
                "cannot open stackctl.log or /dev/null for the supervisor",
            );
            return;
        };
        let argv = vec![
            self.exe.display().to_string(),
            "supervise".to_string(),
            "--stack".to_string(),
            self.opts.stack_file.display().to_string(),
            "--state-dir".to_string(),
            self.opts.state_dir.display().to_string(),
        ];
        let env = self.supervisor_env();
        let cwd = self
            .opts
            .stack_file
            .parent()
            .map_or_else(|| PathBuf::from("/"), PathBuf::from);
        match spawn::spawn_with(&argv, &cwd, &env, Output::Split(stdout, OwnedFd::from(log))) {
            Ok(pid) => {
                note("INFO", &format!("launched supervisor {pid}"));
                self.launched = Some((pid, Instant::now()));
                self.launched_exit = None;
            }
            Err(e) => {
                self.relaunch_delay = (self.relaunch_delay * 2).clamp(RELAUNCH_MIN, RELAUNCH_MAX);
                note(
                    "ERROR",
                    &format!(
                        "cannot launch {}: {e}; trying again in {}",
                        self.exe.display(),
                        humantime::format_duration(self.relaunch_delay)
                    ),
                );
                self.relaunch_at = Some(Instant::now() + self.relaunch_delay);
            }
        }
    }

    /// The environment of a supervisor it launches: its own, or the base
    /// environment a supervisor left (`proto::BASE_ENV_KEY`) with its own
    /// `STACKCTL_*` variables.
    fn supervisor_env(&self) -> Vec<(String, String)> {
        let kept = self
            .kept
            .get(super::proto::BASE_ENV_KEY)
            .and_then(|t| serde_json::from_str::<BTreeMap<String, String>>(t).ok());
        match kept {
            Some(mut base) => {
                base.extend(std::env::vars().filter(|(k, _)| k.starts_with("STACKCTL_")));
                base.into_iter().collect()
            }
            None => std::env::vars().collect(),
        }
    }

    /// Re-executes the anchor from `exe`, keeping everything: the same
    /// pid (so every process stays its child, and the subreaper bit stays),
    /// the listening socket, the lock, every pipe with what was read of it
    /// and not yet written, every held fd and kept value. Returns only when
    /// the exec failed (the anchor then goes on as it was).
    fn reexec_from(&mut self, exe: &std::path::Path) {
        let snapshot = self.snapshot();
        let path = self.state.anchor_resume();
        let written = serde_json::to_vec(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::state::write_atomic(&path, &bytes, 0o600));
        if let Err(e) = written {
            note(
                "ERROR",
                &format!(
                    "cannot keep the anchor's state in {}: {e}; not re-executing",
                    path.display()
                ),
            );
            return;
        }
        for fd in snapshot.fds() {
            keep_across_exec(fd);
        }
        note("INFO", &format!("re-executing from {}", exe.display()));
        let argv: Vec<std::ffi::CString> = [
            exe.display().to_string(),
            "anchor".to_string(),
            "--resume".to_string(),
            path.display().to_string(),
        ]
        .into_iter()
        .filter_map(|a| std::ffi::CString::new(a).ok())
        .collect();
        let Ok(prog) = std::ffi::CString::new(exe.as_os_str().as_encoded_bytes()) else {
            return;
        };
        let err = nix::unistd::execv(&prog, &argv);
        note(
            "ERROR",
            &format!(
                "cannot re-execute from {}: {err:?}; going on with this binary",
                exe.display()
            ),
        );
        let _ = std::fs::remove_file(&path);
    }

    fn snapshot(&self) -> Snapshot {
        let pipe = |p: &Pipe| {
            let (partial, open_line) = p.drain.held();
            SnapPipe {
                fd: p.fd.as_raw_fd(),
                instance: p.instance.clone(),
                partial: partial.to_vec(),
                open_line,
            }
        };
        Snapshot {
            version: proto::VERSION,
            state_dir: self.opts.state_dir.clone(),
            stack_file: self.opts.stack_file.clone(),
            exe: self.exe.clone(),
            echo: self.opts.echo,
            listener: self.listener.as_raw_fd(),
            lock: self.lock_fd(),
            children: self
                .children
                .iter()
                .map(|(pid, c)| SnapChild {
                    info: c.info(*pid),
                    acked: c.acked,
                    end_marked: c.end_marked,
                    pipe: c.pipe.as_ref().map(pipe),
                    pidfd: c.pidfd.as_ref().map(AsRawFd::as_raw_fd),
                })
                .collect(),
            lingering: self.lingering.values().map(pipe).collect(),
            held: self
                .held
                .iter()
                .map(|(k, fd)| (k.clone(), fd.as_raw_fd()))
                .collect(),
            kept: self.kept.clone(),
            young_deaths: self.young_deaths,
        }
    }

    fn lock_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd as _;
        self._lock.as_raw_fd()
    }

    /// The anchor a re-execution left (see [`House::reexec_from`]).
    pub(super) fn resume(snap: Snapshot, state: StateDir) -> Result<House, Error> {
        #[allow(unsafe_code)]
        let own = |fd: RawFd| {
            // SAFETY: each fd number was open and ours in the process image
            // that wrote the snapshot, was kept open across the exec, and
            // nothing in this image has touched it yet; each is taken once.
            unsafe { super::owned(fd) }
        };
        let signals =
            signal_fd().map_err(|e| Error::failed(format!("cannot watch signals: {e}")))?;
        let listener = own(snap.listener);
        let lock = Held::from_fd(own(snap.lock));
        let mut children = BTreeMap::new();
        let mut logs: Vec<(String, LogTarget)> = Vec::new();
        for c in snap.children {
            let watch = c.info.watch.as_deref().and_then(|w| Regex::new(w).ok());
            logs.push((c.info.instance.clone(), c.info.log.clone()));
            children.insert(
                c.info.pid,
                Child {
                    instance: c.info.instance,
                    start_ticks: c.info.start_ticks,
                    log: c.info.log,
                    watch_src: c.info.watch,
                    watch,
                    step: c.info.step,
                    matched: c.info.matched,
                    exit: c.info.exit,
                    reported: false,
                    acked: c.acked,
                    report_due: c.info.exit.map(|_| Instant::now()),
                    pipe: c.pipe.map(|p| Pipe {
                        fd: own(p.fd),
                        drain: Drain::resume(p.partial, p.open_line),
                        instance: p.instance,
                    }),
                    pidfd: c.pidfd.map(own),
                    started: started_at(c.info.start_ticks),
                    end_marked: c.end_marked,
                    mark: c.info.mark,
                },
            );
        }
        let lingering: BTreeMap<u64, Pipe> = snap
            .lingering
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    i as u64,
                    Pipe {
                        fd: own(p.fd),
                        drain: Drain::resume(p.partial, p.open_line),
                        instance: p.instance,
                    },
                )
            })
            .collect();
        let opts = Options {
            state_dir: snap.state_dir,
            stack_file: snap.stack_file,
            exe: snap.exe.clone(),
            launch: false,
            echo: snap.echo,
        };
        let mut house = House {
            launched: None,
            // The supervisor that asked for this left for the new binary:
            // launch it now.
            relaunch_at: Some(Instant::now()),
            relaunch_delay: Duration::ZERO,
            young_deaths: snap.young_deaths,
            awaiting_exit: false,
            launched_exit: None,
            retiring: false,
            exe: snap.exe,
            reexec: None,
            echo: snap.echo.map(|color| Style { color }),
            opts,
            state,
            _lock: lock,
            listener,
            signals,
            conns: Vec::new(),
            supervisor: None,
            serving: false,
            next_lingering: lingering.len() as u64,
            children,
            lingering,
            logs: BTreeMap::new(),
            held: snap.held.into_iter().map(|(k, fd)| (k, own(fd))).collect(),
            kept: snap.kept,
            scratch: vec![0u8; crate::logs::READ_BUF],
            recv_buf: vec![0u8; proto::MAX_MESSAGE],
            cgroups: None,
        };
        for (instance, target) in logs {
            house.ensure_log(&instance, &target);
        }
        // Children that exited while the exec happened are waiting to be
        // reaped.
        house.reap();
        Ok(house)
    }
}

/// The held sockets under `keys`, in order; the first missing key otherwise.
fn passed<'a>(
    held: &'a BTreeMap<String, OwnedFd>,
    keys: &[String],
) -> Result<Vec<BorrowedFd<'a>>, String> {
    keys.iter()
        .map(|k| held.get(k).map(AsFd::as_fd).ok_or_else(|| k.clone()))
        .collect()
}

/// How long to wait before relaunching a supervisor after `young` of them
/// in a row died young: at once the first time, then 1 s doubling to 30 s.
/// After a supervisor went away without a word (`exit`: how it ended, when
/// it was our child; `lived`: how long, when we launched it), the young
/// deaths in a row so far (`young_deaths` before it) and how long to wait
/// before the next one. A SIGKILL (an operator, the OOM killer) is not a
/// crash of its own: the count starts again, and the relaunch is at once.
fn relaunch_after(
    exit: Option<ExitRec>,
    lived: Option<Duration>,
    young_deaths: u32,
) -> (u32, Duration) {
    let killed = exit == Some(ExitRec::Signal(Signal::SIGKILL as i32));
    let young = lived.is_some_and(|l| l < STABLE_AFTER);
    let n = if young && !killed {
        young_deaths + 1
    } else {
        0
    };
    (n, relaunch_delay(n))
}

fn relaunch_delay(young: u32) -> Duration {
    match young {
        0 | 1 => Duration::ZERO,
        n => (RELAUNCH_MIN * 2u32.saturating_pow(n - 2)).min(RELAUNCH_MAX),
    }
}

/// What a re-executed anchor needs of the one before it. Fds are numbers
/// valid in the new image (kept open across the exec).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Snapshot {
    version: u32,
    state_dir: PathBuf,
    stack_file: PathBuf,
    exe: PathBuf,
    echo: Option<bool>,
    listener: RawFd,
    lock: RawFd,
    children: Vec<SnapChild>,
    lingering: Vec<SnapPipe>,
    held: Vec<(String, RawFd)>,
    kept: BTreeMap<String, String>,
    young_deaths: u32,
}

impl Snapshot {
    /// Reads what [`House::reexec_from`] wrote, and removes the file.
    ///
    /// # Errors
    /// When it cannot be read or is another version's.
    pub(super) fn take(path: &std::path::Path) -> Result<Snapshot, Error> {
        let text = std::fs::read(path)
            .map_err(|e| Error::failed(format!("cannot read {}: {e}", path.display())))?;
        let _ = std::fs::remove_file(path);
        let snap: Snapshot = serde_json::from_slice(&text).map_err(|e| {
            Error::failed(format!("{} is not an anchor's state: {e}", path.display()))
        })?;
        if snap.version != proto::VERSION {
            return Err(Error::failed(format!(
                "{} was written by anchor protocol v{}, this binary speaks v{}",
                path.display(),
                snap.version,
                proto::VERSION
            )));
        }
        Ok(snap)
    }

    pub(super) fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    fn fds(&self) -> Vec<RawFd> {
        let mut out = vec![self.listener, self.lock];
        for c in &self.children {
            out.extend(c.pipe.as_ref().map(|p| p.fd));
            out.extend(c.pidfd);
        }
        out.extend(self.lingering.iter().map(|p| p.fd));
        out.extend(self.held.iter().map(|(_, fd)| *fd));
        out
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SnapChild {
    info: ChildInfo,
    acked: bool,
    #[serde(default)]
    end_marked: bool,
    pipe: Option<SnapPipe>,
    pidfd: Option<RawFd>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SnapPipe {
    fd: RawFd,
    instance: String,
    partial: Vec<u8>,
    open_line: bool,
}

/// Clears `FD_CLOEXEC` on `fd`, so that it survives an `execve`.
fn keep_across_exec(fd: RawFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    if let Ok(bits) = fcntl(fd, FcntlArg::F_GETFD) {
        let flags = FdFlag::from_bits_truncate(bits) - FdFlag::FD_CLOEXEC;
        let _ = fcntl(fd, FcntlArg::F_SETFD(flags));
    }
}

fn kind_of(m: &ToAnchor) -> &'static str {
    match m {
        ToAnchor::Hello { .. } => "hello",
        ToAnchor::Spawn(_) => "spawn",
        ToAnchor::Ack { .. } => "ack",
        ToAnchor::Put { .. } => "put",
        ToAnchor::Del { .. } => "del",
        ToAnchor::Hold { .. } => "hold",
        ToAnchor::Release { .. } => "release",
        ToAnchor::Adopt(_) => "adopt",
        ToAnchor::Launch => "launch",
        ToAnchor::Retire => "retire",
        ToAnchor::Serving => "serving",
        ToAnchor::Bye { .. } => "bye",
        ToAnchor::Upgrade { .. } => "upgrade",
    }
}

fn echo_line(style: Style, instance: &str, line: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}{}",
        style.prefix(instance, 12),
        String::from_utf8_lossy(line)
    );
}

/// Binds `anchor.sock` (mode 0600), removing a stale one.
fn listen_on(state: &StateDir) -> Result<OwnedFd, Error> {
    let path = state.anchor_socket();
    let fail = |e: &dyn std::fmt::Display| {
        Error::failed(format!("cannot listen on {}: {e}", path.display()))
    };
    let _ = std::fs::remove_file(&path);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| fail(&e))?;
    let (addr_path, _dir) = crate::control::socket_address(&path).map_err(|e| fail(&e))?;
    let addr = UnixAddr::new(&addr_path).map_err(|e| fail(&e))?;
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(|e| fail(&e))?;
    listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN)).map_err(|e| fail(&e))?;
    Ok(fd)
}

/// SIGCHLD, SIGTERM, SIGINT and SIGHUP as events on an fd (blocked for
/// normal delivery; children get a clean mask from the spawn set-up).
fn signal_fd() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set.thread_block()?;
    // A write to a connection whose peer is gone must be an error, not death.
    // SAFETY: setting SIG_IGN installs no handler code.
    #[allow(unsafe_code)]
    unsafe {
        nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn)?;
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// A pidfd for `pid` (`pidfd_open(2)`): readable once it exits.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; on success it
    // returns a new fd that nobody else owns.
    #[allow(unsafe_code)]
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return None;
    }
    let raw = RawFd::try_from(r).ok()?;
    // SAFETY: the kernel just returned this fd for us.
    #[allow(unsafe_code)]
    Some(unsafe { super::owned(raw) })
}

fn dev_null() -> Option<OwnedFd> {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok()
        .map(OwnedFd::from)
}

/// Tells the supervisor that launched this anchor that it listens.
fn announce_ready() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

/// Points stdout at /dev/null: the launcher's pipe must end when the
/// launched side is done with it, and nothing here may block on it.
fn detach_stdout() {
    if let Some(null) = dev_null() {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relaunch_waits_for_crashes_young_never_for_a_sigkill_or_a_long_life() {
        let young = Some(Duration::from_secs(1));
        let old = Some(STABLE_AFTER + Duration::from_secs(1));
        let abort = Some(ExitRec::Signal(Signal::SIGABRT as i32));
        let kill = Some(ExitRec::Signal(Signal::SIGKILL as i32));
        let code = Some(ExitRec::Code(101));
        // (exit, lived, young deaths before) -> (young deaths after, delay s)
        let table = [
            ((abort, young, 0), (1, 0)),
            ((abort, young, 1), (2, 1)),
            ((code, young, 2), (3, 2)),
            ((code, young, 7), (8, 30)),
            // Killed: at once, and the count starts again.
            ((kill, young, 5), (0, 0)),
            // A long life ends the run of young deaths.
            ((abort, old, 5), (0, 0)),
            // Not our child (a supervisor run by hand): nothing says young.
            ((None, None, 3), (0, 0)),
        ];
        for ((exit, lived, before), (after, delay)) in table {
            assert_eq!(
                relaunch_after(exit, lived, before),
                (after, Duration::from_secs(delay)),
                "{exit:?} after {lived:?}, {before} before"
            );
        }
    }

    #[test]
    fn a_supervisor_that_keeps_dying_young_is_relaunched_ever_later() {
        let d: Vec<u64> = (0..9).map(|n| relaunch_delay(n).as_secs()).collect();
        assert_eq!(d, [0, 0, 1, 2, 4, 8, 16, 30, 30]);
    }
}
