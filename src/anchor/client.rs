//! The supervisor's side of the anchor: connect, take the inventory, ask
//! for spawns, and route what the anchor tells (exits, matched lines, log
//! errors) to whoever waits for it.
//!
//! Owns: the connection's two tasks (one reads, one writes, so that sends
//! from synchronous code never block and keep their order), the routing
//! tables, and a mirror of what the anchor holds (each live child with a
//! copy of its pipe, each held fd, each kept value). Both outlive a
//! connection: when the anchor dies, the supervisor launches a new one and
//! [`Link::reconnect`] hands it the mirror (`Adopt`, `Hold`, `Put`), so no
//! pipe ever loses its last reader and every waiter is still there for the
//! new anchor's answers. Must not touch: what the supervisor does with an
//! exit.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};

use super::proto::{self, ChildInfo, FromAnchor, Role, SpawnReq, ToAnchor};
use crate::spawn::Exit;
use crate::state::StateDir;

/// What a spawn gave.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub start_ticks: u64,
    /// Resolves with the exit, once the output is drained.
    pub exit: oneshot::Receiver<Exit>,
    /// Resolves when the `watch` regex saw its line.
    pub matched: oneshot::Receiver<()>,
}

/// A process the anchor already has, from the inventory.
#[derive(Debug)]
pub struct Adopted {
    pub info: ChildInfo,
    pub exit: oneshot::Receiver<Exit>,
    pub matched: oneshot::Receiver<()>,
}

/// What the anchor had when the supervisor connected.
#[derive(Debug, Default)]
pub struct Inventory {
    pub children: Vec<Adopted>,
    /// Copies of the held fds (the link keeps its own too).
    pub held: BTreeMap<String, OwnedFd>,
    pub kept: BTreeMap<String, String>,
}

/// What the anchor holds, as the link last told it: enough to hand it all
/// to a new anchor.
#[derive(Default)]
struct Mirror {
    /// Live children, each with a copy of its pipe's read end (kept, never
    /// read, so that the pipe outlives an anchor that dies).
    children: HashMap<i32, (ChildInfo, Option<OwnedFd>)>,
    held: HashMap<String, OwnedFd>,
    kept: HashMap<String, String>,
}

/// An answer that may come before anyone waits for it.
enum Slot<T> {
    Waiting(oneshot::Sender<T>),
    Came(T),
}

impl<T> Slot<T> {
    /// A fresh slot and the receiver that waits on it.
    fn new() -> (Slot<T>, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        (Slot::Waiting(tx), rx)
    }
}

#[derive(Default)]
struct Routes {
    next_id: u64,
    /// Spawns asked for and not yet answered: what the mirror keeps of
    /// each once it runs (a `ChildInfo` with no pid yet; not the request
    /// itself, whose argv and environment would be kept for nothing).
    spawns: HashMap<u64, (ChildInfo, oneshot::Sender<Result<Spawned, String>>)>,
    mirror: Mirror,
    exits: HashMap<i32, Slot<Exit>>,
    matched: HashMap<i32, Slot<()>>,
    log_errors: HashMap<String, String>,
    /// Waiting for the anchor's `Done` to a barrier (see [`Link::synced`]).
    barriers: std::collections::VecDeque<oneshot::Sender<()>>,
}

/// What the writer task is given: a message, or a marker that resolves
/// once everything before it has been sent.
enum Outgoing {
    Msg(Vec<u8>, Vec<OwnedFd>),
    Flushed(oneshot::Sender<()>),
}

/// The supervisor's connection to its anchor.
pub struct Link {
    routes: Arc<Mutex<Routes>>,
    tx: Mutex<mpsc::UnboundedSender<Outgoing>>,
    anchor_pid: Mutex<i32>,
    /// Set when the connection ends (the anchor died).
    broken: watch::Sender<bool>,
}

impl Link {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connects to the anchor of `state` as its supervisor and takes the
    /// inventory. `Ok(None)`: no anchor listens there.
    ///
    /// # Errors
    /// The anchor refused (another supervisor is connected, another
    /// version), or the connection failed midway.
    pub async fn connect(state: &StateDir) -> io::Result<Option<(Arc<Link>, Inventory)>> {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let Some((fd, anchor_pid, inventory)) = handshake(state, &routes).await? else {
            return Ok(None);
        };
        let (broken, _) = watch::channel(false);
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            routes,
            tx: Mutex::new(tx),
            anchor_pid: Mutex::new(anchor_pid),
            broken,
        });
        link.run(fd, rx);
        Ok(Some((link, inventory)))
    }

    /// After the anchor died: connects to a new one (the caller launched
    /// it), keeping every waiter. The new anchor's inventory is empty.
    ///
    /// # Errors
    /// As [`Link::connect`]; `NotFound` when nothing listens.
    pub async fn reconnect(self: &Arc<Link>, state: &StateDir) -> io::Result<()> {
        let Some((fd, anchor_pid, _)) = handshake(state, &self.routes).await? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no anchor listens"));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = tx;
        *self.anchor_pid.lock().unwrap_or_else(|p| p.into_inner()) = anchor_pid;
        let _ = self.broken.send(false);
        self.run(fd, rx);
        self.replay();
        Ok(())
    }

    /// Hands the new anchor everything the old one held.
    fn replay(&self) {
        let mut out: Vec<(ToAnchor, Vec<OwnedFd>)> = Vec::new();
        {
            let r = self.routes();
            for (info, pipe) in r.mirror.children.values() {
                let fds = pipe
                    .as_ref()
                    .and_then(|p| p.try_clone().ok())
                    .into_iter()
                    .collect();
                out.push((ToAnchor::Adopt(info.clone()), fds));
            }
            for (key, fd) in &r.mirror.held {
                let fds = fd.try_clone().ok().into_iter().collect();
                out.push((ToAnchor::Hold { key: key.clone() }, fds));
            }
            for (key, value) in &r.mirror.kept {
                out.push((
                    ToAnchor::Put {
                        key: key.clone(),
                        value: value.clone(),
                    },
                    Vec::new(),
                ));
            }
        }
        let n = out.len();
        for (msg, fds) in out {
            self.send(&msg, fds);
        }
        tracing::info!("handed the new anchor {n} processes, fds and records");
    }

    /// Tells the anchor that this supervisor now answers on its control
    /// socket (a `stackctl start` waiting on the anchor may go ahead).
    pub fn serving(&self) {
        self.send(&ToAnchor::Serving, Vec::new());
    }

    fn run(self: &Arc<Link>, fd: Arc<AsyncFd<OwnedFd>>, rx: mpsc::UnboundedReceiver<Outgoing>) {
        tokio::spawn(write_loop(fd.clone(), rx));
        let link = self.clone();
        tokio::spawn(async move {
            read_loop(&fd, &link.routes).await;
            fail_spawns(&link.routes, "the anchor is gone");
            let _ = link.broken.send(true);
        });
    }

    /// A link whose anchor is already gone: for unit tests of code that
    /// holds a link but spawns nothing.
    #[cfg(test)]
    pub(crate) fn gone() -> Arc<Link> {
        let (broken, _) = watch::channel(true);
        let (tx, _rx) = mpsc::unbounded_channel();
        Arc::new(Link {
            routes: Arc::new(Mutex::new(Routes::default())),
            tx: Mutex::new(tx),
            anchor_pid: Mutex::new(0),
            broken,
        })
    }

    /// The anchor's pid.
    pub fn anchor_pid(&self) -> i32 {
        *self.anchor_pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves to `true` when the connection to the anchor ends.
    pub fn broken(&self) -> watch::Receiver<bool> {
        self.broken.subscribe()
    }

    fn send(&self, msg: &ToAnchor, fds: Vec<OwnedFd>) {
        match proto::encode(msg) {
            Ok(bytes) => {
                let _ = self
                    .tx
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .send(Outgoing::Msg(bytes, fds));
            }
            Err(e) => tracing::error!("cannot encode a message to the anchor: {e}"),
        }
    }

    /// Asks the anchor to spawn `req` (its `id` is set here).
    ///
    /// # Errors
    /// Why it could not be spawned, or that the anchor is gone.
    pub async fn spawn(&self, mut req: SpawnReq) -> Result<Spawned, String> {
        let rx = {
            let mut r = self.routes();
            r.next_id += 1;
            req.id = r.next_id;
            let (tx, rx) = oneshot::channel();
            let info = ChildInfo {
                instance: req.instance.clone(),
                pid: 0,
                start_ticks: 0,
                matched: false,
                exit: None,
                log: req.log.clone(),
                watch: req.watch.clone(),
                step: req.step,
                mark: req.mark.clone(),
            };
            r.spawns.insert(req.id, (info, tx));
            rx
        };
        if *self.broken.borrow() {
            self.routes().spawns.remove(&req.id);
            return Err("the anchor is gone".into());
        }
        self.send(&ToAnchor::Spawn(req), Vec::new());
        rx.await
            .unwrap_or_else(|_| Err("the anchor is gone".into()))
    }

    /// The exit of `pid` has been acted on.
    pub fn ack(&self, pid: i32) {
        {
            let mut r = self.routes();
            r.exits.remove(&pid);
            r.matched.remove(&pid);
            r.mirror.children.remove(&pid);
        }
        self.send(&ToAnchor::Ack { pid }, Vec::new());
    }

    /// Keeps `value` under `key` in the anchor.
    pub fn put(&self, key: &str, value: String) {
        self.routes()
            .mirror
            .kept
            .insert(key.to_string(), value.clone());
        self.send(
            &ToAnchor::Put {
                key: key.to_string(),
                value,
            },
            Vec::new(),
        );
    }

    pub fn del(&self, key: &str) {
        self.routes().mirror.kept.remove(key);
        self.send(
            &ToAnchor::Del {
                key: key.to_string(),
            },
            Vec::new(),
        );
    }

    /// Hands the anchor a copy of `fd` to keep under `key`.
    pub fn hold(&self, key: &str, fd: &impl AsFd) {
        match (
            fd.as_fd().try_clone_to_owned(),
            fd.as_fd().try_clone_to_owned(),
        ) {
            (Ok(copy), Ok(kept)) => {
                self.routes().mirror.held.insert(key.to_string(), kept);
                self.send(
                    &ToAnchor::Hold {
                        key: key.to_string(),
                    },
                    vec![copy],
                );
            }
            (Err(e), _) | (_, Err(e)) => tracing::error!("cannot hand {key} to the anchor: {e}"),
        }
    }

    pub fn release(&self, key: &str) {
        self.routes().mirror.held.remove(key);
        self.send(
            &ToAnchor::Release {
                key: key.to_string(),
            },
            Vec::new(),
        );
    }

    /// The supervisor leaves for the binary at `exe`: the anchor re-executes
    /// itself from it, then launches it (see [`ToAnchor::Upgrade`]).
    pub fn upgrade(&self, exe: PathBuf) {
        self.send(&ToAnchor::Upgrade { exe }, Vec::new());
    }

    /// Resolves once the anchor has handled everything sent before (a
    /// `Release` that frees a port), at most 2 s. The barrier is `Launch`,
    /// which the anchor answers `Done` at once for the serving supervisor
    /// (and once it serves, before that), after every earlier message: it
    /// handles one connection's messages in order.
    pub async fn synced(&self) {
        let (tx, rx) = oneshot::channel();
        self.routes().barriers.push_back(tx);
        self.send(&ToAnchor::Launch, Vec::new());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx).await;
    }

    /// The supervisor leaves on purpose (see [`ToAnchor::Bye`]).
    pub fn bye(&self, relaunch: bool, exe: Option<PathBuf>) {
        self.send(&ToAnchor::Bye { relaunch, exe }, Vec::new());
    }

    /// What is wrong with an instance's log now, as the anchor said.
    pub fn log_error(&self, instance: &str) -> Option<String> {
        self.routes().log_errors.get(instance).cloned()
    }

    /// Waits until everything sent so far has left (at most 2 s), before
    /// the supervisor exits on purpose.
    pub async fn flushed(&self) {
        let (done, rx) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Outgoing::Flushed(done));
        if sent.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx).await;
        }
    }
}

/// Connects, says hello as the supervisor, and reads the inventory.
async fn handshake(
    state: &StateDir,
    routes: &Arc<Mutex<Routes>>,
) -> io::Result<Option<(Arc<AsyncFd<OwnedFd>>, i32, Inventory)>> {
    let Some(fd) = dial(&state.anchor_socket())? else {
        return Ok(None);
    };
    // SAFETY: the OwnedFd moves into the AsyncFd, which owns it from here
    // on: it stays open and the same until the AsyncFd is dropped.
    #[allow(unsafe_code)]
    let fd = Arc::new(unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?);
    let hello = ToAnchor::Hello {
        role: Role::Supervisor {
            pid: std::process::id() as i32,
        },
        version: proto::VERSION,
    };
    send_now(&fd, &hello).await?;
    let mut buf = vec![0u8; proto::MAX_MESSAGE];
    let anchor_pid = match recv_one(&fd, &mut buf).await? {
        (FromAnchor::Welcome { anchor_pid, .. }, _) => anchor_pid,
        (FromAnchor::Refused { reason }, _) => {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, reason))
        }
        (other, _) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the anchor answered {other:?}"),
            ))
        }
    };
    let mut inv = Inventory::default();
    loop {
        let (msg, mut fds) = recv_one(&fd, &mut buf).await?;
        match msg {
            FromAnchor::Child(info) => {
                let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
                let (exit_slot, exit) = match info.exit {
                    Some(e) => {
                        let (tx, rx) = oneshot::channel();
                        let _ = tx.send(Exit::from(e));
                        (Slot::Came(Exit::from(e)), rx)
                    }
                    None => Slot::new(),
                };
                let (match_slot, matched) = if info.matched {
                    let (tx, rx) = oneshot::channel();
                    let _ = tx.send(());
                    (Slot::Came(()), rx)
                } else {
                    Slot::new()
                };
                // An exit already known is handed over at once: keep no slot
                // that could swallow a later message.
                if info.exit.is_none() {
                    r.exits.insert(info.pid, exit_slot);
                }
                if !info.matched {
                    r.matched.insert(info.pid, match_slot);
                }
                let pipe = fds.pop();
                r.mirror.children.insert(info.pid, (info.clone(), pipe));
                inv.children.push(Adopted {
                    info,
                    exit,
                    matched,
                });
            }
            FromAnchor::Held { key } => {
                if let Some(fd) = fds.pop() {
                    let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
                    if let Ok(copy) = fd.try_clone() {
                        r.mirror.held.insert(key.clone(), copy);
                    }
                    inv.held.insert(key, fd);
                }
            }
            FromAnchor::Value { key, value } => {
                let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
                r.mirror.kept.insert(key.clone(), value.clone());
                inv.kept.insert(key, value);
            }
            FromAnchor::Inventoried => break,
            FromAnchor::LogState { instance, error } => set_log_error(routes, instance, error),
            other => tracing::debug!("anchor, during the inventory: {other:?}"),
        }
    }
    Ok(Some((fd, anchor_pid, inv)))
}

/// A connected, non-blocking `SOCK_SEQPACKET` to `path`; `None` when
/// nobody listens (no file, a stale file, refused).
fn dial(path: &std::path::Path) -> io::Result<Option<OwnedFd>> {
    let (addr_path, _dir) = match crate::control::socket_address(path) {
        Ok(a) => a,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(&addr_path)?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    super::nonblocking(&fd)?;
    Ok(Some(fd))
}

/// A client's one request to the anchor (no supervisor role): `Launch`
/// (with a pipe for the supervisor's `ready`) or `Retire`. `Ok(false)`:
/// no anchor listens.
///
/// # Errors
/// The anchor refused or the connection failed.
pub fn request(state: &StateDir, msg: &ToAnchor, fds: &[RawFd]) -> io::Result<bool> {
    let Some(fd) = dial(&state.anchor_socket())? else {
        return Ok(false);
    };
    let hello = ToAnchor::Hello {
        role: Role::Client,
        version: proto::VERSION,
    };
    let mut buf = vec![0u8; 64 * 1024];
    send_blocking(&fd, &proto::encode(&hello)?, &[])?;
    match recv_blocking(&fd, &mut buf)? {
        FromAnchor::Welcome { .. } => {}
        FromAnchor::Refused { reason } => {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, reason))
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the anchor answered {other:?}"),
            ))
        }
    }
    send_blocking(&fd, &proto::encode(msg)?, fds)?;
    match recv_blocking(&fd, &mut buf)? {
        FromAnchor::Done => Ok(true),
        FromAnchor::Refused { reason } => {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, reason))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the anchor answered {other:?}"),
        )),
    }
}

fn wait_for(fd: &OwnedFd, flags: nix::poll::PollFlags) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), flags)];
    match poll(&mut fds, PollTimeout::from(15_000u16)) {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the anchor did not answer within 15s",
        )),
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn send_blocking(fd: &OwnedFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    loop {
        match proto::send_raw(fd.as_fd(), bytes, fds) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(fd, nix::poll::PollFlags::POLLOUT)?
            }
            r => return r,
        }
    }
}

fn recv_blocking(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<FromAnchor> {
    loop {
        match proto::recv::<FromAnchor>(fd.as_fd(), buf) {
            Ok((m, _)) => return Ok(m),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(fd, nix::poll::PollFlags::POLLIN)?
            }
            Err(e) => return Err(e),
        }
    }
}

async fn send_now(fd: &AsyncFd<OwnedFd>, msg: &ToAnchor) -> io::Result<()> {
    let bytes = proto::encode(msg)?;
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|f| proto::send_raw(f.get_ref().as_fd(), &bytes, &[])) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn recv_one(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<(FromAnchor, Vec<OwnedFd>)> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|f| proto::recv::<FromAnchor>(f.get_ref().as_fd(), buf)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_loop(fd: Arc<AsyncFd<OwnedFd>>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        let (bytes, fds) = match out {
            Outgoing::Msg(bytes, fds) => (bytes, fds),
            Outgoing::Flushed(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        loop {
            let Ok(mut guard) = fd.writable().await else {
                return;
            };
            match guard.try_io(|f| proto::send_raw(f.get_ref().as_fd(), &bytes, &raw)) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::warn!("the anchor connection failed: {e}");
                    return;
                }
                Err(_would_block) => continue,
            }
        }
    }
}

async fn read_loop(fd: &AsyncFd<OwnedFd>, routes: &Arc<Mutex<Routes>>) {
    let mut buf = vec![0u8; proto::MAX_MESSAGE];
    loop {
        let (msg, fds) = match recv_one(fd, &mut buf).await {
            Ok(m) => m,
            Err(e) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::error!("the anchor connection failed: {e}");
                }
                return;
            }
        };
        route(routes, msg, fds);
    }
}

fn route(routes: &Arc<Mutex<Routes>>, msg: FromAnchor, mut fds: Vec<OwnedFd>) {
    let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
    match msg {
        FromAnchor::Spawned {
            id,
            pid,
            start_ticks,
        } => {
            let (exit_slot, exit) = Slot::new();
            let (match_slot, matched) = Slot::new();
            r.exits.insert(pid, exit_slot);
            r.matched.insert(pid, match_slot);
            if let Some((mut info, tx)) = r.spawns.remove(&id) {
                info.pid = pid;
                info.start_ticks = start_ticks;
                r.mirror.children.insert(pid, (info, fds.pop()));
                let _ = tx.send(Ok(Spawned {
                    pid,
                    start_ticks,
                    exit,
                    matched,
                }));
            }
        }
        FromAnchor::SpawnFailed { id, error } => {
            if let Some((_, tx)) = r.spawns.remove(&id) {
                let _ = tx.send(Err(error));
            }
        }
        FromAnchor::Exited { pid, exit } => {
            if let Some((info, _)) = r.mirror.children.get_mut(&pid) {
                info.exit = Some(exit);
            }
            fire(&mut r.exits, pid, Exit::from(exit));
        }
        FromAnchor::Matched { pid } => {
            if let Some((info, _)) = r.mirror.children.get_mut(&pid) {
                info.matched = true;
            }
            fire(&mut r.matched, pid, ());
        }
        FromAnchor::LogState { instance, error } => {
            drop(r);
            set_log_error(routes, instance, error);
        }
        FromAnchor::Refused { reason } => tracing::error!("the anchor refused: {reason}"),
        FromAnchor::Done => {
            if let Some(tx) = r.barriers.pop_front() {
                let _ = tx.send(());
            }
        }
        other => tracing::debug!("anchor: {other:?}"),
    }
}

/// Delivers `v` to whoever waits on `pid`'s slot, or keeps it for them.
fn fire<T>(slots: &mut HashMap<i32, Slot<T>>, pid: i32, v: T) {
    match slots.remove(&pid) {
        Some(Slot::Waiting(tx)) => {
            let _ = tx.send(v);
        }
        Some(Slot::Came(old)) => {
            slots.insert(pid, Slot::Came(old));
        }
        None => {
            slots.insert(pid, Slot::Came(v));
        }
    }
}

fn set_log_error(routes: &Arc<Mutex<Routes>>, instance: String, error: Option<String>) {
    let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
    match error {
        Some(e) => {
            tracing::warn!(process = %instance, "log: {e}");
            r.log_errors.insert(instance, e);
        }
        None => {
            if r.log_errors.remove(&instance).is_some() {
                tracing::info!(process = %instance, "log: writing again");
            }
        }
    }
}

fn fail_spawns(routes: &Arc<Mutex<Routes>>, why: &str) {
    let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
    for (_, (_, tx)) in r.spawns.drain() {
        let _ = tx.send(Err(why.to_string()));
    }
}
