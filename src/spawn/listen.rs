//! Listening sockets for children: binding them, finding who holds an
//! address, and handing them to a child at fds 3… with systemd's socket
//! activation protocol (`sd_listen_fds(3)`).
//!
//! Owns: the bind (TCP over IPv4 or IPv6, `IPV6_V6ONLY`; unix stream
//! sockets, a stale socket file replaced), the holder of an address in use
//! (`/proc/net/{tcp,tcp6,unix}` and `/proc/*/fd`), the `listen-exec`
//! trampoline, and making a shell exec a lone command. Must not touch:
//! when a socket is bound or released (the supervisor's), which fds a
//! child gets (its caller's).
//!
//! Theory of operation. A child that gets sockets is spawned as
//! `/proc/self/exe listen-exec --fds 7,9 -- ARGV…`: the spawn set-up marks
//! every fd close-on-exec except the ones passed (at whatever numbers they
//! have in the parent), and the trampoline — a fresh image of this binary,
//! one thread, nothing else open — moves them to 3, 4, …, marks every
//! other fd close-on-exec, sets `LISTEN_PID` to its own pid and execs
//! ARGV, which keeps that pid. Why not place them in the spawn's own
//! `pre_exec`: std's `Command` runs the closures before it installs the
//! child's environment, so `LISTEN_PID` (known only after `fork`) cannot
//! be added there; and `dup2` onto 3… in the forked child can overwrite
//! std's own exec-error pipe, which std opens at the lowest free fd just
//! before `fork` — a number the closure cannot know. The trampoline is
//! systemfd's trick (`mitsuhiko/systemfd`); it costs one exec per spawn.
//! A program that cannot be executed then exits 127 with the reason in
//! its log, instead of failing the spawn itself.
//!
//! `LISTEN_PID` must be the pid of the program that reads the fds. Under
//! `/bin/sh -c` the shell forks its command (dash does, even a lone one),
//! so a lone command is run as `exec COMMAND` ([`exec_in_place`]): the
//! same thing without the fork. A compound command (`cd x && uvicorn …`)
//! is run as written; it must `exec` its server itself.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind as nix_bind, listen as nix_listen, setsockopt, socket, sockopt, AddressFamily, Backlog,
    SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr,
};

use crate::config::ListenAddr;

/// The accept queue of a held socket: connections wait there while no
/// process accepts (a restart), up to the kernel's `somaxconn`.
pub const BACKLOG: i32 = 1024;

/// The hidden command that places passed fds and execs the program.
pub const TRAMPOLINE: &str = "listen-exec";

/// Why an address could not be bound.
#[derive(Debug)]
pub struct BindError {
    pub addr: String,
    pub cause: io::Error,
    /// Who holds it, when it is in use and that can be found.
    pub holder: Option<Holder>,
}

/// A process holding an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    /// Its `comm` (the program's short name).
    pub name: String,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.addr, self.cause)?;
        if let Some(h) = &self.holder {
            write!(f, " (held by pid {}, {})", h.pid, h.name)?;
        }
        Ok(())
    }
}

/// Binds `addr` and listens (close-on-exec, blocking, backlog
/// [`BACKLOG`]). A unix socket file that nobody listens on any more is
/// replaced; its folder is created.
///
/// # Errors
/// The address is in use (with its holder when found), not allowed, or a
/// file that is not a socket is in the way.
pub fn bind(addr: &ListenAddr) -> Result<OwnedFd, BindError> {
    let fail = |cause: io::Error| BindError {
        addr: addr.to_string(),
        holder: (cause.raw_os_error() == Some(libc::EADDRINUSE))
            .then(|| holder(addr))
            .flatten(),
        cause,
    };
    match addr {
        ListenAddr::Tcp(a) => bind_tcp(*a).map_err(fail),
        ListenAddr::Unix(p) => bind_unix(p).map_err(fail),
    }
}

fn bind_tcp(a: SocketAddr) -> io::Result<OwnedFd> {
    let family = if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    match a {
        SocketAddr::V4(v4) => nix_bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => {
            // `[::]:80` is IPv6 only: IPv4 stays free for its own entry.
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            nix_bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
        }
    }
    nix_listen(&fd, backlog())?;
    Ok(fd)
}

fn backlog() -> Backlog {
    Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN)
}

fn bind_unix(path: &Path) -> io::Result<OwnedFd> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
            }
            // Nobody listens: a socket left by a process that died.
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way (remove it, or choose another path)",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // A path longer than `sun_path` is reached through an open handle on
    // its folder.
    let (shown, _dir) = short_path(path)?;
    nix_bind(fd.as_raw_fd(), &UnixAddr::new(&shown)?)?;
    nix_listen(&fd, backlog())?;
    Ok(fd)
}

/// `path` itself when it fits a socket address, else
/// `/proc/self/fd/N/<name>` with N an open handle on its folder (kept
/// open as long as the returned fd lives).
fn short_path(path: &Path) -> io::Result<(PathBuf, Option<std::fs::File>)> {
    if path.as_os_str().len() < 100 {
        return Ok((path.to_path_buf(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok((path.to_path_buf(), None));
    };
    let handle = std::fs::File::open(dir)?;
    let via = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name);
    Ok((via, Some(handle)))
}

/// Removes a unix socket's file once nobody holds it any more.
pub fn unlink(addr: &ListenAddr) {
    if let ListenAddr::Unix(p) = addr {
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Who listens on `addr`, from `/proc`: the socket's inode in
/// `/proc/net/*`, then the process with that inode among its fds.
pub fn holder(addr: &ListenAddr) -> Option<Holder> {
    let inode = match addr {
        ListenAddr::Tcp(a) => {
            let table = if a.is_ipv4() { "tcp" } else { "tcp6" };
            let text = std::fs::read_to_string(format!("/proc/net/{table}")).ok()?;
            listening_tcp_inode(&text, *a)?
        }
        ListenAddr::Unix(p) => {
            let text = std::fs::read_to_string("/proc/net/unix").ok()?;
            listening_unix_inode(&text, p)?
        }
    };
    let link = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let found = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == link.as_str()));
        if found {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            return Some(Holder { pid, name });
        }
    }
    None
}

/// The inode of the listening socket on `addr` in a `/proc/net/tcp` or
/// `tcp6` table (a wildcard listener holds every address of its port).
fn listening_tcp_inode(table: &str, addr: SocketAddr) -> Option<u64> {
    const LISTEN: &str = "0A";
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
            continue;
        };
        if *state != LISTEN {
            continue;
        }
        let Some((ip, port)) = local.split_once(':') else {
            continue;
        };
        let (Some(ip), Ok(port)) = (proc_ip(ip), u16::from_str_radix(port, 16)) else {
            continue;
        };
        if port == addr.port() && (ip == addr.ip() || ip.is_unspecified()) {
            return inode.parse().ok();
        }
    }
    None
}

/// An address as `/proc/net/tcp*` prints it: 32-bit words in hex, each
/// in the host's byte order.
fn proc_ip(hex: &str) -> Option<IpAddr> {
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(hex.get(i * 8..i * 8 + 8)?)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The inode of the listening unix socket bound at `path` in
/// `/proc/net/unix`.
fn listening_unix_inode(table: &str, path: &Path) -> Option<u64> {
    const ACCEPTING: u32 = 1 << 16;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(inode), Some(p)) = (f.get(3), f.get(6), f.get(7)) else {
            continue;
        };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|fl| fl & ACCEPTING != 0);
        if listening && Path::new(p) == path {
            return inode.parse().ok();
        }
    }
    None
}

/// The argv that runs `argv` with `fds` at 3… through the trampoline.
pub fn trampoline_argv(argv: &[String], fds: &[BorrowedFd<'_>]) -> Vec<String> {
    let list: Vec<String> = fds.iter().map(|f| f.as_raw_fd().to_string()).collect();
    let mut out = vec![
        "/proc/self/exe".to_string(),
        TRAMPOLINE.to_string(),
        "--fds".to_string(),
        list.join(","),
        "--".to_string(),
    ];
    out.extend(exec_in_place(argv.to_vec()));
    out
}

/// The trampoline (`stackctl listen-exec --fds 7,9 -- ARGV…`): moves the
/// fds to 3, 4, … (in order), marks every other fd close-on-exec, and
/// execs ARGV with `LISTEN_PID` set to this pid. Returns only when that
/// failed.
pub fn exec_with_fds(fds: &[RawFd], argv: &[String]) -> io::Error {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = argv.split_first() else {
        return io::Error::new(io::ErrorKind::InvalidInput, "no command to run");
    };
    let n = fds.len() as RawFd;
    let first = 3;
    // Every source first above the targets, so no move overwrites a
    // source not yet moved; then each to its place (dup2 leaves it open
    // across exec).
    let mut high = Vec::with_capacity(fds.len());
    for fd in fds {
        match fcntl(*fd, FcntlArg::F_DUPFD_CLOEXEC(first + n)) {
            Ok(h) => high.push(h),
            Err(e) => return io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd}: {e}")),
        }
    }
    for fd in fds {
        let _ = nix::unistd::close(*fd);
    }
    for (i, h) in high.iter().enumerate() {
        if let Err(e) = nix::unistd::dup2(*h, first + i as RawFd) {
            return e.into();
        }
        let _ = nix::unistd::close(*h);
    }
    // Nothing else reaches the program.
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let open: Vec<RawFd> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        for fd in open.into_iter().filter(|fd| *fd >= first + n) {
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
    }
    let pid = std::process::id().to_string();
    std::process::Command::new(program)
        .args(args)
        .env("LISTEN_PID", pid)
        .exec()
}

/// `/bin/sh -c COMMAND` as `/bin/sh -c 'exec COMMAND'` when COMMAND is
/// one plain command, so that the shell becomes the program instead of
/// forking it; anything else unchanged.
pub fn exec_in_place(argv: Vec<String>) -> Vec<String> {
    match argv.as_slice() {
        [sh, c, script] if sh == "/bin/sh" && c == "-c" && lone_command(script) => {
            vec![sh.clone(), c.clone(), format!("exec {script}")]
        }
        _ => argv,
    }
}

/// Words that must not follow `exec`: reserved words and builtins that
/// are no program.
const NOT_A_PROGRAM: &[&str] = &[
    "!", "{", "}", "case", "do", "done", "elif", "else", "esac", "fi", "for", "if", "in", "then",
    "until", "while", "exec", ".", ":", "break", "continue", "eval", "exit", "export", "readonly",
    "return", "set", "shift", "times", "trap", "unset", "cd", "command", "wait", "read", "alias",
    "unalias", "ulimit", "umask", "getopts", "hash", "jobs", "fg", "bg", "local", "type",
];

/// Whether `script` is one simple command naming a program: no unquoted
/// operator (`;`, `&`, `|`, parentheses, a newline), no command
/// substitution, no leading variable assignment, not a shell keyword or
/// builtin.
fn lone_command(script: &str) -> bool {
    if script.contains('`') || script.contains("$(") || script.contains('\n') {
        return false;
    }
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut prev = ' ';
    for c in script.chars() {
        if escaped {
            escaped = false;
            prev = c;
            continue;
        }
        match c {
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            // `2>&1`, `<&3`: a redirection, not a background operator.
            '&' if !single && !double && matches!(prev, '>' | '<') => {}
            ';' | '&' | '|' | '(' | ')' if !single && !double => return false,
            _ => {}
        }
        prev = c;
    }
    if single || double {
        return false;
    }
    let first = script.split_whitespace().next().unwrap_or("");
    !first.is_empty()
        && !first.starts_with('#')
        && !first.contains('=')
        && !NOT_A_PROGRAM.contains(&first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_command_is_execd_in_place_and_anything_else_is_left_alone() {
        let sh = |s: &str| vec!["/bin/sh".to_string(), "-c".to_string(), s.to_string()];
        for s in [
            "python3 server.py --port 8000",
            "uvicorn app:app --fd 3 > /dev/null 2>&1",
            "node 'server with space.js' \"a;b\" x\\;y",
            "./run",
        ] {
            assert_eq!(exec_in_place(sh(s)), sh(&format!("exec {s}")), "{s}");
        }
        for s in [
            "cd app && uvicorn x",
            "a; b",
            "a | b",
            "a &",
            "(a)",
            "FOO=1 python3 x.py",
            "exec python3 x.py",
            "cd /tmp",
            "if true; then a; fi",
            "echo $(date)",
            "echo `date`",
            "a\nb",
            "echo 'unterminated",
            "",
            "# a comment",
        ] {
            assert_eq!(exec_in_place(sh(s)), sh(s), "{s:?}");
        }
        let argv = vec!["python3".to_string(), "x.py".to_string()];
        assert_eq!(exec_in_place(argv.clone()), argv);
    }

    #[test]
    fn the_listening_socket_of_an_address_is_found_in_proc_net() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0\n   1: 0100007F:1F41 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0\n   2: 00000000:1F42 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0\n";
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(listening_tcp_inode(tcp, a("127.0.0.1:8000")), Some(111));
            // Connected, not listening.
            assert_eq!(listening_tcp_inode(tcp, a("127.0.0.1:8001")), None);
            // A wildcard listener holds the loopback address too.
            assert_eq!(listening_tcp_inode(tcp, a("127.0.0.1:8002")), Some(333));
            let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0\n";
            assert_eq!(listening_tcp_inode(v6, a("[::1]:8000")), Some(444));
        }
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n0000000000000000: 00000002 00000000 00010000 0001 01 555 /run/api.sock\n0000000000000000: 00000003 00000000 00000000 0001 03 666 /run/other.sock\n";
        assert_eq!(
            listening_unix_inode(unix, Path::new("/run/api.sock")),
            Some(555)
        );
        assert_eq!(
            listening_unix_inode(unix, Path::new("/run/other.sock")),
            None
        );
    }

    #[test]
    fn an_address_in_use_names_its_holder_and_a_stale_unix_socket_is_replaced() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ListenAddr::Tcp(taken.local_addr().unwrap());
        let e = bind(&addr).unwrap_err();
        assert_eq!(e.cause.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
        let me = std::process::id() as i32;
        assert_eq!(e.holder.as_ref().map(|h| h.pid), Some(me), "{e}");
        assert!(e.to_string().contains(&format!("held by pid {me}")), "{e}");
        drop(taken);
        let fd = bind(&addr).unwrap();
        drop(fd);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("api.sock");
        let u = ListenAddr::Unix(path.clone());
        let held = bind(&u).unwrap();
        let e = bind(&u).unwrap_err();
        assert_eq!(e.holder.as_ref().map(|h| h.pid), Some(me), "{e}");
        drop(held);
        // Nobody listens on the file now: it is replaced. (A child another
        // test thread forks holds a copy of every fd until its exec: give
        // that a moment.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let again = loop {
            match bind(&u) {
                Ok(fd) => break fd,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert_eq!(e.cause.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(again);
        unlink(&u);
        assert!(!path.exists());
        std::fs::write(&path, "not a socket").unwrap();
        let e = bind(&u).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
    }
}
