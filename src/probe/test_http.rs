//! A tiny HTTP/1.0 server on a thread, for the probe tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub(super) enum Behaviour {
    /// Answer every request with this status.
    Status(u16),
    /// 302 to `/elsewhere`, which answers 503.
    Redirect,
    /// Accept, read the request, never answer (the connection stays open).
    Hang,
    /// 503 for the first N requests, then 200.
    FailFirst(usize),
}

pub(super) struct Server {
    port: u16,
    count: Arc<AtomicUsize>,
}

impl Server {
    pub(super) fn start(b: Behaviour) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let path = read_request(&mut conn);
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (status, extra) = match b {
                    Behaviour::Status(s) => (s, ""),
                    Behaviour::Redirect if path == "/elsewhere" => (503, ""),
                    Behaviour::Redirect => (302, "Location: /elsewhere\r\n"),
                    Behaviour::Hang => {
                        held.push(conn);
                        continue;
                    }
                    Behaviour::FailFirst(k) => (if n < k { 503 } else { 200 }, ""),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.0 {status} X\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Server { port, count }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(super) fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Reads up to the end of the headers; returns the request path.
fn read_request(conn: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).unwrap_or("/").to_string()
}
