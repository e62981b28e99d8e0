"""The demo's `web` frontend (stands in for the Next.js standalone server):
serves the page that `pre_start` copied into demo/var/www, and proxies
/api/* to the API (/api/jobs -> $API_URL/jobs).
"""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import forward, log, port, send_json, serve_until_sigterm

API_URL = os.environ.get("API_URL") or f"http://127.0.0.1:{port('API_PORT', 18000)}"
WWW = os.environ.get("WEB_ROOT") or "demo/var/www"


class Web(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/api/"):
            forward(self, API_URL, self.path[4:])
        elif self.path in ("/", "/index.html"):
            with open(os.path.join(WWW, "index.html"), "rb") as f:
                page = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
        else:
            send_json(self, 404, {"error": "not found"})

    def do_POST(self):
        if self.path.startswith("/api/"):
            forward(self, API_URL, self.path[4:])
        else:
            send_json(self, 404, {"error": "not found"})

    def log_message(self, fmt, *args):
        log(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else '?'}")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", port("WEB_PORT", 18001)), Web)
    serve_until_sigterm(server, f"web (api at {API_URL})")


if __name__ == "__main__":
    main()
