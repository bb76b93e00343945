"""A loopback TCP proxy that breaks its first connection on purpose (to test resumption).

`cut(upstream_bytes_so_far) -> int | None` is asked after each chunk read from the server on
the first connection; a number n means: send the client only the first n bytes of the
response stream, then close the connection. Later connections pass
through untouched. `requests` lists the request heads it forwarded (bodies are ignored).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class BreakingProxy:
    def __init__(self, upstream: str, cut: Callable[[bytes], int | None]) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self._upstream = (host, int(port))
        self._cut = cut
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sent: list[bytearray] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def requests(self) -> list[bytes]:
        """The request heads received so far (all connections, in order, lower-cased)."""
        heads = []
        for sent in self._sent:
            heads += [h for h in bytes(sent).lower().split(b"\r\n\r\n") if h.startswith((b"get ", b"post "))]
        return heads

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            threading.Thread(target=self._serve, args=(client, first), daemon=True).start()

    def _serve(self, client: socket.socket, first: bool) -> None:
        upstream = socket.create_connection(self._upstream)
        sent = bytearray()
        self._sent.append(sent)

        def forward_requests() -> None:
            try:
                while data := client.recv(65536):
                    sent.extend(data)
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=forward_requests, daemon=True).start()
        seen = bytearray()
        try:
            while data := upstream.recv(1024):
                before = len(seen)
                seen.extend(data)
                limit = self._cut(bytes(seen)) if first else None
                if limit is not None:
                    client.sendall(data[: max(0, limit - before)])
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
