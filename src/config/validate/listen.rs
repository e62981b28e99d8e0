//! Validating `listen`: the sockets stackctl binds for a service and passes
//! to it as fds 3….
//!
//! Owns: the address syntax (`"127.0.0.1:8000"`, `"[::1]:8000"`,
//! `"unix:PATH"`, or `{ addr = …, name = … }`), templates in it (expanded
//! at load, with no per-instance variable: a pool's members share the
//! service's sockets, one accept queue), names for `LISTEN_FDNAMES`, two
//! processes on one address, and gates that a held socket makes
//! meaningless (a `tcp` probe is refused; an `http` probe gets a warning).
//! Must not touch: binding (the supervisor's, at start).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;

use toml::Spanned;

use super::super::diag::Diagnostic;
use super::super::env::{expand, ExpandError};
use super::super::model::{Kind, ListenAddr, ListenSpec, ProbeKind};
use super::super::raw::{RawListen, RawProbe};
use super::{Ctx, SPAWN_VARS};

/// How an address is written, for hints.
const ADDR_HINT: &str = "an IP address and a port (\"127.0.0.1:8000\", \"[::1]:8000\", \"0.0.0.0:8000\"), or \"unix:PATH\" (relative to the stack file's folder)";

/// The longest name `LISTEN_FDNAMES` takes (systemd's limit).
const MAX_NAME: usize = 255;

/// Where a process's `listen` entries are written, for the checks across
/// processes.
pub(super) type Placed = Vec<(String, ListenAddr, Range<usize>)>;

impl Ctx<'_> {
    /// The `listen` entries of `name` (a task may have none), each parsed;
    /// where each is written goes to `placed`.
    pub(super) fn listen(
        &mut self,
        raw: Option<&Vec<Spanned<RawListen>>>,
        kind: Kind,
        name: &str,
        env: &BTreeMap<String, String>,
        stack: &str,
        placed: &mut Placed,
    ) -> Vec<ListenSpec> {
        let Some(entries) = raw else {
            return Vec::new();
        };
        if kind == Kind::Task {
            let at = (self.input.key_span)(&["task", name, "listen"]).unwrap_or(0..0);
            self.push(
                Diagnostic::at(at, format!("task `{name}` cannot have `listen`"))
                    .hint("a task runs once to completion; only a [service] holds sockets"),
            );
            return Vec::new();
        }
        let key = format!("service.{name}.listen");
        let mut out = Vec::new();
        for e in entries {
            let (addr, label) = match e.get_ref() {
                RawListen::Addr(a) => ((a.clone(), e.span()), None),
                RawListen::Table(t) => {
                    let Some(a) = &t.addr else {
                        self.push(
                            Diagnostic::at(e.span(), format!("a `{key}` entry has no `addr`"))
                                .hint(format!("e.g. {{ addr = \"127.0.0.1:8000\", name = \"http\" }}; {ADDR_HINT}")),
                        );
                        continue;
                    };
                    ((a.get_ref().clone(), a.span()), t.name.as_ref())
                }
            };
            let Some(parsed) = self.listen_addr(&addr.0, addr.1.clone(), &key, env, stack) else {
                continue;
            };
            let fd_name = match label {
                None => name.to_string(),
                Some(n) if valid_fd_name(n.get_ref()) => n.get_ref().clone(),
                Some(n) => {
                    self.push(
                        Diagnostic::at(n.span(), format!("bad socket name `{}` in `{key}`", n.get_ref()))
                            .hint(format!("names go into LISTEN_FDNAMES: letters, digits, `_`, `-` and `.`, at most {MAX_NAME} characters")),
                    );
                    continue;
                }
            };
            if let Some((_, other, _)) = placed
                .iter()
                .find(|(p, a, _)| p == name && a.overlaps(&parsed))
            {
                let shown = if *other == parsed {
                    format!("`{parsed}` twice")
                } else {
                    format!("`{parsed}`, which overlaps `{other}`")
                };
                self.push(
                    Diagnostic::at(addr.1.clone(), format!("`{key}` has {shown}"))
                        .hint("each address is bound once: remove the repeat"),
                );
                continue;
            }
            placed.push((name.to_string(), parsed.clone(), addr.1));
            out.push(ListenSpec {
                addr: parsed,
                name: fd_name,
            });
        }
        out
    }

    /// One address, its templates expanded (no per-instance variable).
    fn listen_addr(
        &mut self,
        template: &str,
        span: Range<usize>,
        key: &str,
        env: &BTreeMap<String, String>,
        stack: &str,
    ) -> Option<ListenAddr> {
        let expanded = {
            let lookup = |k: &str| {
                if k == "STACKCTL_STACK" {
                    return Some(stack.to_string());
                }
                if SPAWN_VARS.contains(&k) {
                    return None;
                }
                env.get(k).cloned().or_else(|| (self.input.os_env)(k))
            };
            expand(template, &lookup)
        };
        let value = match expanded {
            Ok(v) => v,
            Err(ExpandError::Unset(var)) if SPAWN_VARS.contains(&var.as_str()) => {
                self.push(
                    Diagnostic::at(span, format!("`{key}` cannot use `{var}`"))
                        .hint("a service's sockets are bound once and shared by all its instances (a pool's members take turns on one accept queue); write the address without it"),
                );
                return None;
            }
            Err(err) => {
                self.push(Diagnostic::at(span, format!("in `{key}`: {err}")));
                return None;
            }
        };
        match parse_addr(&value) {
            Ok(ListenAddr::Unix(p)) => Some(ListenAddr::Unix(super::super::diag::normalize(
                &self.resolve(&p.display().to_string()),
            ))),
            Ok(a) => Some(a),
            Err(why) => {
                self.push(
                    Diagnostic::at(span, format!("`{key}` entry `{value}` {why}")).hint(ADDR_HINT),
                );
                None
            }
        }
    }

    /// Refuses a `tcp` probe on an address `listen` holds (the kernel
    /// completes its connect into the backlog before the process runs)
    /// and warns about an `http` gate there (during an overlapping
    /// restart the old instance may answer it).
    pub(super) fn gates_on_held_sockets(
        &mut self,
        name: &str,
        listen: &[ListenSpec],
        probes: [(&str, Option<&RawProbe>, Option<&ProbeKind>); 2],
        env: &BTreeMap<String, String>,
    ) {
        if listen.is_empty() {
            return;
        }
        for (role, raw, probe) in probes {
            let (Some(raw), Some(probe)) = (raw, probe) else {
                continue;
            };
            let key = format!("service.{name}.{role}");
            let (target, span) = match probe {
                ProbeKind::Tcp(t) => (
                    self.expanded_for_check(t, env)
                        .and_then(|t| split_host_port(&t)),
                    raw.tcp.as_ref().map(Spanned::span),
                ),
                ProbeKind::Http(u) => (
                    self.expanded_for_check(u, env)
                        .and_then(|u| http_host_port(&u)),
                    raw.http.as_ref().map(Spanned::span),
                ),
                _ => continue,
            };
            let Some((host, port)) = target else {
                continue;
            };
            let Some(held) = listen.iter().find(|l| l.addr.serves(&host, port)) else {
                continue;
            };
            let span = span.unwrap_or(0..0);
            match probe {
                ProbeKind::Tcp(_) => self.push(
                    Diagnostic::at(span, format!("`{key}.tcp` reaches `{}`, which this service gets from `listen`: it would pass before the process even runs", held.addr))
                        .hint("stackctl holds that socket, so the kernel completes every connection into its backlog whoever accepts; use `log`, `notify`, or an `http` probe (it waits for an answer)"),
                ),
                _ if role == "ready" => self.warnings.push(
                    Diagnostic::at(span, format!("`{key}.http` reaches `{}`, which this service gets from `listen`: during a restart the old process may answer it", held.addr))
                        .hint("`restart` starts the new instance on the same socket before it stops the old one; a `log` or `notify` gate (or an http gate on a port of the new process's own) waits for the new one itself"),
                ),
                _ => {}
            }
        }
    }

    /// A probe template expanded as `template` proves it expands (the
    /// per-instance variables stand for anything).
    fn expanded_for_check(&self, template: &str, env: &BTreeMap<String, String>) -> Option<String> {
        let lookup = |k: &str| {
            if SPAWN_VARS.contains(&k) {
                return Some("1".to_string());
            }
            env.get(k).cloned().or_else(|| (self.input.os_env)(k))
        };
        expand(template, &lookup).ok()
    }

    /// Two processes on one address.
    pub(super) fn listen_conflicts(&mut self, placed: &Placed) {
        for (i, (p, a, span)) in placed.iter().enumerate() {
            if let Some((q, b, _)) = placed[..i].iter().find(|(q, b, _)| q != p && b.overlaps(a)) {
                let same = if a == b {
                    format!("`{a}`")
                } else {
                    format!("`{a}` (it overlaps `{b}`)")
                };
                self.push(
                    Diagnostic::at(span.clone(), format!("`{p}` and `{q}` both listen on {same}"))
                        .hint("one socket per address: give each service its own port or path (a pool's members already share their service's sockets)"),
                );
            }
        }
    }
}

/// An address as written after expansion.
fn parse_addr(v: &str) -> Result<ListenAddr, &'static str> {
    if let Some(path) = v.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("has no path after `unix:`");
        }
        if path.contains('\0') {
            return Err("has a NUL byte in its path");
        }
        return Ok(ListenAddr::Unix(path.into()));
    }
    let addr: SocketAddr = v.parse().map_err(|_| "is not an IP address with a port")?;
    if addr.port() == 0 {
        return Err("has port 0 (any port): no client could find it");
    }
    Ok(ListenAddr::Tcp(addr))
}

/// `host:port` split (`[::1]:80` included).
fn split_host_port(t: &str) -> Option<(String, u16)> {
    let (h, p) = t.rsplit_once(':')?;
    Some((h.to_string(), p.parse().ok()?))
}

/// The host and port an `http://` or `https://` URL connects to.
fn http_host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default) = match url.strip_prefix("http://") {
        Some(r) => (r, 80),
        None => (url.strip_prefix("https://")?, 443),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.ends_with(']') || !authority.contains(':') {
        return Some((authority.to_string(), default));
    }
    split_host_port(authority)
}

fn valid_fd_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_why() {
        let ok: [(&str, &str); 4] = [
            ("127.0.0.1:8000", "127.0.0.1:8000"),
            ("[::1]:8000", "[::1]:8000"),
            ("0.0.0.0:80", "0.0.0.0:80"),
            ("unix:/run/api.sock", "unix:/run/api.sock"),
        ];
        for (v, shown) in ok {
            assert_eq!(parse_addr(v).unwrap().to_string(), shown, "{v}");
        }
        for (v, why) in [
            ("localhost:8000", "is not an IP address with a port"),
            ("127.0.0.1", "is not an IP address with a port"),
            ("::1:8000", "is not an IP address with a port"),
            (
                "127.0.0.1:0",
                "has port 0 (any port): no client could find it",
            ),
            ("unix:", "has no path after `unix:`"),
        ] {
            assert_eq!(parse_addr(v).unwrap_err(), why, "{v}");
        }
    }

    #[test]
    fn which_addresses_overlap_and_which_probe_targets_reach_a_socket() {
        let a = |v: &str| parse_addr(v).unwrap();
        assert!(a("127.0.0.1:8000").overlaps(&a("127.0.0.1:8000")));
        assert!(a("0.0.0.0:8000").overlaps(&a("127.0.0.1:8000")));
        assert!(!a("127.0.0.1:8000").overlaps(&a("127.0.0.2:8000")));
        assert!(!a("127.0.0.1:8000").overlaps(&a("127.0.0.1:8001")));
        // IPv6 sockets are bound v6-only: no clash with IPv4.
        assert!(!a("[::]:8000").overlaps(&a("0.0.0.0:8000")));
        assert!(a("[::]:8000").overlaps(&a("[::1]:8000")));
        assert!(a("unix:/a").overlaps(&a("unix:/a")) && !a("unix:/a").overlaps(&a("unix:/b")));

        assert!(a("127.0.0.1:8000").serves("127.0.0.1", 8000));
        assert!(a("127.0.0.1:8000").serves("localhost", 8000));
        assert!(a("0.0.0.0:8000").serves("127.0.0.1", 8000));
        assert!(a("[::1]:8000").serves("[::1]", 8000));
        assert!(!a("127.0.0.1:8000").serves("127.0.0.1", 8001));
        assert!(!a("[::1]:8000").serves("127.0.0.1", 8000));
        assert!(!a("unix:/a").serves("localhost", 8000));
    }

    #[test]
    fn an_http_url_connects_to_its_host_and_port() {
        let hp = |u: &str| http_host_port(u);
        assert_eq!(
            hp("http://127.0.0.1:8000/health"),
            Some(("127.0.0.1".into(), 8000))
        );
        assert_eq!(hp("http://localhost/x"), Some(("localhost".into(), 80)));
        assert_eq!(hp("https://[::1]/"), Some(("[::1]".into(), 443)));
        assert_eq!(hp("http://[::1]:9/"), Some(("[::1]".into(), 9)));
        assert_eq!(hp("http://u:p@h:7?q"), Some(("h".into(), 7)));
        assert_eq!(hp("ftp://h"), None);
    }
}
