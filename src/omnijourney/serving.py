"""A small HTTP server on its own daemon threads (click tracking, metrics and health).

Every connection is untrusted: a socket timeout ends one that goes quiet (a held
connection would hold its thread forever), and at most ``max_connections`` are served at
once; one more gets a 503 and is closed rather than a thread of its own.
"""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

LOOPBACK = "127.0.0.1"  # every server binds here unless told otherwise
SOCKET_TIMEOUT = 10.0
MAX_CONNECTIONS = 64


class QuietHandler(BaseHTTPRequestHandler):
    """No access log on stderr: the caller logs what matters with structlog."""

    timeout = SOCKET_TIMEOUT  # StreamRequestHandler sets it on the socket

    def log_message(self, format: str, *args: object) -> None:
        pass


class _BoundedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_connections: int) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class BackgroundServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int,
                 name: str, max_connections: int = MAX_CONNECTIONS) -> None:
        self.server = _BoundedServer((host, port), handler, max_connections)
        self.port = int(self.server.server_address[1])
        self.host = host
        self._thread = threading.Thread(target=self.server.serve_forever, name=name,
                                        daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
