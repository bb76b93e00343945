"""A real HTTP server on loopback that records webhook POSTs and answers scripted status codes."""

from __future__ import annotations

import http.server
import ssl
import threading
from dataclasses import dataclass, field


@dataclass
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Receiver:
    codes: list[int]  # answers in order; the last one repeats
    received: list[Received] = field(default_factory=list)
    url: str = ""
    tls: ssl.SSLContext | None = None  # serve https with this server context

    def start(self) -> http.server.ThreadingHTTPServer:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.codes[min(len(receiver.received), len(receiver.codes)) - 1]
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # quiet test output
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        scheme = "https" if self.tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{server.server_port}/hooks/ganft"
        return server
