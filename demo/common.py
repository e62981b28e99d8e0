"""Small helpers shared by the demo programs (standard library only)."""

import json
import os
import sqlite3
import sys
import urllib.error
import urllib.request

NAME = os.environ.get("STACKCTL_PROCESS", os.path.basename(sys.argv[0]))


def log(msg):
    """One line on stdout; stackctl writes it to this process's log."""
    print(f"{NAME}: {msg}", flush=True)


def port(var, default):
    return int(os.environ.get(var) or default)


def db_path():
    return os.environ.get("DEMO_DB") or "demo/var/jobs.sqlite3"


def connect():
    """A connection in autocommit mode; callers open transactions themselves."""
    conn = sqlite3.connect(db_path(), timeout=10, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def send_json(handler, status, body):
    data = json.dumps(body, indent=1).encode() + b"\n"
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def forward(handler, upstream, path):
    """Sends the request `handler` is serving to `upstream` + `path` and
    copies the answer back (status, content type, body)."""
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else None
    req = urllib.request.Request(upstream + path, data=body, method=handler.command)
    if handler.headers.get("Content-Type"):
        req.add_header("Content-Type", handler.headers["Content-Type"])
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, ctype, data = resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as e:
        status, ctype, data = e.code, e.headers.get("Content-Type"), e.read()
    except OSError as e:
        log(f"upstream {upstream} unreachable: {e}")
        send_json(handler, 502, {"error": f"upstream {upstream} unreachable"})
        return
    handler.send_response(status)
    handler.send_header("Content-Type", ctype or "application/octet-stream")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def http_server(handler, port_var, default):
    """A threading HTTP server for `handler`: on the socket stackctl passes
    at fd 3 (`listen` in stack.toml: systemd's LISTEN_FDS protocol, so it
    survives restarts and a restart refuses no connection), else bound to
    127.0.0.1 and the port in `port_var` itself."""
    import socket
    from http.server import ThreadingHTTPServer

    if os.environ.get("LISTEN_FDS") and os.environ.get("LISTEN_PID") == str(os.getpid()):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=3)
        # Another process (the one being replaced) may take a connection
        # first: then accept says so instead of blocking.
        server.socket.setblocking(False)
        server.server_address = server.socket.getsockname()
    else:
        server = ThreadingHTTPServer(("127.0.0.1", port(port_var, default)), handler)
    # Requests in flight finish before the process exits.
    server.daemon_threads = False
    server.block_on_close = True
    return server


def serve_until_sigterm(server, what):
    """Serves until SIGTERM or SIGINT, then stops accepting, lets requests in
    flight finish and returns."""
    import signal
    import threading

    def stop(signum, _frame):
        log(f"got {signal.Signals(signum).name}, shutting down")
        # shutdown() waits for serve_forever() to return: call it from
        # another thread, never from the serving one.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port_ = server.server_address[:2]
    log(f"{what} listening on http://{host}:{port_}")
    server.serve_forever()
    server.server_close()
    log("stopped")
