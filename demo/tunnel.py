"""The demo's `tunnel` (stands in for ngrok): a second port that forwards
every request to the web frontend, and answers its own GET /health (the
URL the stack's `health` check polls; while it fails, stackctl restarts
the tunnel).
"""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import forward, log, port, send_json, serve_until_sigterm

WEB_URL = os.environ.get("WEB_URL") or f"http://127.0.0.1:{port('WEB_PORT', 18001)}"


class Tunnel(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            send_json(self, 200, {"ok": True, "forwarding_to": WEB_URL})
        else:
            forward(self, WEB_URL, self.path)

    def do_POST(self):
        forward(self, WEB_URL, self.path)

    def log_message(self, fmt, *args):
        if self.path != "/health":
            log(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else '?'}")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", port("TUNNEL_PORT", 18002)), Tunnel)
    host, p = server.server_address[:2]
    log(f"started tunnel: url=http://{host}:{p} -> {WEB_URL}")
    serve_until_sigterm(server, "tunnel")


if __name__ == "__main__":
    main()
