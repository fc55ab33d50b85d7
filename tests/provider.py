"""A real local HTTP server that behaves like a provider: scripted statuses (429 with
Retry-After, 5xx, slow answers) and a record of every request."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Reply:
    status: int = 200
    body: dict[str, object] = field(default_factory=lambda: {"sid": "SM1", "name": "msg/1"})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None  # sent as is instead of a response (truncated, garbled)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Provider:
    def __init__(self, script: list[Reply] | None = None,
                 by_to: dict[str, list[Reply]] | None = None) -> None:
        self.script = list(script or [])
        # Replies for one recipient (the form's To), ahead of the common script.
        self.by_to = {k: list(v) for k, v in (by_to or {}).items()}
        self.requests: list[Seen] = []
        # Idempotency as real providers do it: a repeat of an accepted key gets the
        # first answer back and sends nothing.
        self.accepted: dict[str, Reply] = {}
        self.delivered: list[str] = []  # keys of messages actually sent, in order
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                key = self.headers.get("Idempotency-Key")
                with provider.lock:
                    provider.requests.append(Seen(self.command, self.path,
                                                  dict(self.headers.items()), body))
                    to = urllib.parse.parse_qs(body.decode(errors="replace")).get("To", [""])[0]
                    if key and key in provider.accepted:
                        reply = provider.accepted[key]
                    elif provider.by_to.get(to):
                        reply = provider.by_to[to].pop(0)
                    else:
                        reply = provider.script.pop(0) if provider.script else Reply()
                        if 200 <= reply.status < 300 and key:
                            provider.accepted[key] = reply
                            provider.delivered.append(key)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    self.wfile.write(reply.raw)
                    self.close_connection = True
                    return
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PUT = do_PATCH = _any

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Provider:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
