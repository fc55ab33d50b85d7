"""A small HTTP server on its own daemon thread (click tracking, metrics and health)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class QuietHandler(BaseHTTPRequestHandler):
    """No access log on stderr: the caller logs what matters with structlog."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class BackgroundServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int,
                 name: str) -> None:
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name=name,
                                        daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
