"""Click tracking: links in emails point at a redirect that reports ``email.clicked``.

A tracked link is ``<base>/c/<token>``; the token carries the command, customer, journey
and instance key and the target URL, signed with HMAC-SHA256 so nobody can forge clicks
or turn the endpoint into an open redirect. A click publishes a DeliveryReport with status
``clicked``; the engine folds it into an ``email.clicked`` event for that instance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HREF = re.compile(r'(href\s*=\s*")(https?://[^"]+)(")', re.IGNORECASE)
_BARE = re.compile(r"(?<![\"'=])(https?://[^\s<>\"']+)")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, cmd: dict[str, Any], url: str) -> str:
    payload = _b64(json.dumps({"c": cmd["command_id"], "cu": cmd["customer_id"],
                               "j": cmd["journey"], "k": cmd.get("instance_key") or "",
                               "u": url}, separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()[:16])
    return f"{payload}.{sig}"


def read_token(secret: str, token: str) -> dict[str, str] | None:
    payload, _, sig = token.partition(".")
    want = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()[:16])
    if not sig or not hmac.compare_digest(sig, want):
        return None
    try:
        data: dict[str, str] = json.loads(_unb64(payload))
    except ValueError:
        return None
    return data


def track(text: str, cmd: dict[str, Any], base: str, secret: str, *, html: bool) -> str:
    """Rewrite every http(s) link in an HTML or text body to its tracked form."""
    def wrap(url: str) -> str:
        return f"{base.rstrip('/')}/c/{make_token(secret, cmd, url)}"

    if html:
        return _HREF.sub(lambda m: m.group(1) + wrap(m.group(2)) + m.group(3), text)
    return _BARE.sub(lambda m: wrap(m.group(1)), text)


class ClickServer:
    """Serves ``GET /c/<token>``: report the click, then redirect to the target."""

    def __init__(self, secret: str, report: Callable[[dict[str, Any]], None],
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.report = report
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = read_token(outer.secret, self.path.removeprefix("/c/").split("?")[0]) \
                    if self.path.startswith("/c/") else None
                if data is None:
                    self.send_error(400, "unknown or forged link")
                    return
                outer.report({"command_id": data["c"], "customer_id": data["cu"],
                              "channel": "email", "status": "clicked", "provider_id": None,
                              "reason": data["u"], "at": datetime.now(UTC),
                              "journey": data["j"], "instance_key": data["k"] or None})
                self.send_response(302)
                self.send_header("Location", data["u"])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ClickServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
