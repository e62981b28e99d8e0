"""The demo's `api` service (stands in for uvicorn; like `uvicorn --fd 3`
it serves on the socket stackctl holds for it):

    GET  /health      200 {"ok": true}
    POST /jobs        enqueue a job; the body is its payload (text or JSON)
    GET  /jobs        the last 20 jobs, newest first
    GET  /jobs/<id>   one job
"""

import json
import os
from http.server import BaseHTTPRequestHandler

from common import connect, http_server, log, send_json, serve_until_sigterm


class Api(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            send_json(self, 200, {"ok": True})
        elif self.path == "/jobs":
            rows = connect().execute("SELECT * FROM jobs ORDER BY id DESC LIMIT 20").fetchall()
            send_json(self, 200, [dict(r) for r in rows])
        elif self.path.startswith("/jobs/") and self.path[6:].isdigit():
            row = connect().execute("SELECT * FROM jobs WHERE id = ?", (int(self.path[6:]),)).fetchone()
            send_json(self, 200 if row else 404, dict(row) if row else {"error": "no such job"})
        else:
            send_json(self, 404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/jobs":
            send_json(self, 404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length).decode("utf-8", "replace").strip() or "hello"
        job_id = connect().execute("INSERT INTO jobs (payload) VALUES (?)", (payload,)).lastrowid
        log(f"queued job {job_id}: {payload[:60]!r}")
        send_json(self, 201, {"id": job_id, "status": "queued"})

    def log_message(self, fmt, *args):
        if self.path != "/health":  # probes every 250ms would drown the log
            log(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else '?'}")


def main():
    # `require_env` in stack.toml makes stackctl refuse to start us without it.
    if not os.environ.get("JWT_SECRET"):
        raise SystemExit("JWT_SECRET is not set")
    # stackctl passes its socket (`listen`); without one it binds API_PORT.
    server = http_server(Api, "API_PORT", 18000)
    serve_until_sigterm(server, "api")


if __name__ == "__main__":
    main()
