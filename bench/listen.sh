#!/usr/bin/env bash
# Issue 11's figures: a client on 127.0.0.1 sends ~200 requests/s for 20 s
# while the API is restarted 10 times (`stackctl restart api`), and counts
# the requests that failed (refused, reset, timed out) and the p99 latency
# of the rest:
#
#   floor     `listen`, no restart at all
#   listen    `listen = ["127.0.0.1:PORT"]`, a `log` gate: overlapping restarts
#   bind      no `listen`: the server binds the port itself, an `http` gate
#             (stackctl before issue 11: stop, then start)
#
# The API is a stdlib python HTTP server that takes BOOT_DELAY (0.5 s) to
# start, as a real application spends importing its code before it serves.
#
#   bench/listen.sh            # builds --release, runs the three (~75 s)
#   BIN=path bench/listen.sh   # an already built binary
#
# Everything runs in a temp folder that is removed at the end; every stack
# is stopped even on failure.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${BIN:-}" ]]; then
    (cd "$here" && cargo build --release --quiet)
    BIN="$here/target/release/stackctl"
fi
SECONDS_RUN="${SECONDS_RUN:-20}"
RATE="${RATE:-200}"
RESTARTS="${RESTARTS:-10}"
BOOT_DELAY="${BOOT_DELAY:-0.5}"
PY="$(python3 -c 'import sys; print(sys.executable)')"
work="$(mktemp -d /tmp/stackctl-bench-listen.XXXXXX)"
cleanup() {
    for d in "$work"/*/; do
        [[ -f "$d/stack.toml" ]] && (cd "$d" && "$BIN" stop --force >/dev/null 2>&1 || true)
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cat >"$work/server.py" <<'EOF'
import os, signal, socket, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

time.sleep(float(os.environ.get("BOOT_DELAY", "0")))

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

if os.environ.get("LISTEN_PID") == str(os.getpid()):
    srv = HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
    srv.socket.close()
    srv.socket = socket.socket(fileno=3)
    srv.socket.setblocking(False)
else:
    srv = HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
print("serving", flush=True)
srv.serve_forever(poll_interval=0.05)
srv.server_close()
EOF

cat >"$work/client.py" <<'EOF'
import socket, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

port, seconds, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
results = []
lock = threading.Lock()

def one():
    t = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.settimeout(2)
            c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
        outcome = "ok" if data.startswith(b"HTTP/1.0 200") else "reset"
    except ConnectionRefusedError:
        outcome = "refused"
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    except (socket.timeout, TimeoutError):
        outcome = "timeout"
    except OSError:
        outcome = "reset"
    with lock:
        results.append((outcome, time.monotonic() - t))

n = int(seconds * rate)
start = time.monotonic()
with ThreadPoolExecutor(max_workers=64) as pool:
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pool.submit(one)
count = {k: 0 for k in ("ok", "refused", "reset", "timeout")}
for o, _ in results:
    count[o] += 1
lat = sorted(l for o, l in results if o == "ok")
p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else float("nan")
failed = count["refused"] + count["reset"] + count["timeout"]
print(f"{len(results)} {failed} {count['refused']} {count['reset']} {count['timeout']} {p99:.1f}")
EOF

# run NAME LISTEN(yes|no) RESTARTS
run() {
    local name="$1" listen="$2" restarts="$3" port
    port="$(free_port)"
    local d="$work/$name"
    mkdir -p "$d"
    cp "$work/server.py" "$d/"
    if [[ "$listen" == yes ]]; then
        cat >"$d/stack.toml" <<EOF
[service.api]
command = ["$PY", "server.py"]
listen = ["127.0.0.1:$port"]
env = { BOOT_DELAY = "$BOOT_DELAY" }
ready = { log = "^serving" }
stop_timeout = "5s"
EOF
    else
        cat >"$d/stack.toml" <<EOF
[service.api]
command = ["$PY", "server.py"]
env = { BOOT_DELAY = "$BOOT_DELAY", PORT = "$port" }
ready = { http = "http://127.0.0.1:$port/" }
stop_timeout = "5s"
EOF
    fi
    (cd "$d" && "$BIN" start -q)
    "$PY" "$work/client.py" "$port" "$SECONDS_RUN" "$RATE" >"$d/figures" &
    local client=$!
    if ((restarts > 0)); then
        local gap
        gap="$(awk -v s="$SECONDS_RUN" -v n="$restarts" 'BEGIN { printf "%.2f", s / (n + 1) }')"
        for _ in $(seq 1 "$restarts"); do
            sleep "$gap"
            (cd "$d" && "$BIN" restart -q api)
        done
    fi
    wait "$client"
    (cd "$d" && "$BIN" stop -q)
    read -r total failed refused reset timeout p99 <"$d/figures"
    printf "%-8s %-34s %6s %7s %8s %6s %8s %9s\n" "$name" \
        "$([[ $listen == yes ]] && echo "listen, $restarts restarts" || echo "binds itself, $restarts restarts")" \
        "$total" "$failed" "$refused" "$reset" "$timeout" "$p99"
}

echo "stackctl bench listen: $("$BIN" --version), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "~$RATE requests/s for ${SECONDS_RUN}s; the API boots in ${BOOT_DELAY}s"
echo
printf "%-8s %-34s %6s %7s %8s %6s %8s %9s\n" case setup requests failed refused reset timeout "p99(ms)"
run floor yes 0
run listen yes "$RESTARTS"
run bind no "$RESTARTS"
echo
echo "target: 0 failed with listen; its p99 within 2x the floor's"
