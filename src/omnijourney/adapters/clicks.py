"""Tracking: click redirects and provider status callbacks, reported as DeliveryReports.

A tracked link is ``<base>/c/<token>``; the token carries the command, customer, journey,
instance key, channel and the target URL, signed with HMAC-SHA256 so nobody can forge
clicks or turn the endpoint into an open redirect. A click publishes a DeliveryReport with
status ``clicked``; the engine folds it into e.g. an ``email.clicked`` event.

``<base>/u/<token>`` is the one-click unsubscribe (RFC 8058) in marketing mail: a POST
reports ``unsubscribed``, which the engine folds into ``email.unsubscribed`` (consent
revoked); a GET only shows the button.

Providers that report a message's fate later (Twilio-style ``StatusCallback``) are given
``<base>/s/<token>`` with the same kind of token; their form POST (``MessageStatus``
``delivered``, ``undelivered``, ``failed`` …) becomes ``sms.delivered`` / ``sms.failed``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from omnijourney.serving import BackgroundServer, QuietHandler

# Carries a message's signed token in outgoing mail, so that bounces and complaints,
# which return the headers, can be attributed (``omnijourney bounces``).
REPORT_HEADER = "X-Omnijourney-Report"
_HREF = re.compile(r'(href\s*=\s*")(https?://[^"]+)(")', re.IGNORECASE)
_BARE = re.compile(r"(?<![\"'=])(https?://[^\s<>\"']+)")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, cmd: dict[str, Any], url: str) -> str:
    payload = _b64(json.dumps({"c": cmd["command_id"], "cu": cmd["customer_id"],
                               "j": cmd["journey"], "k": cmd.get("instance_key") or "",
                               "ch": cmd.get("channel") or "email", "u": url},
                              separators=(",", ":")).encode())
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


# Provider callback status -> our DeliveryReport status; the rest (queued, sending,
# sent: already reported by the adapter) are acknowledged and dropped.
PROVIDER_STATUSES = {"delivered": "delivered", "undelivered": "failed", "failed": "failed",
                     "bounced": "bounced", "read": "opened", "opened": "opened"}


def status_callback_url(base: str, secret: str, cmd: dict[str, Any]) -> str:
    return f"{base.rstrip('/')}/s/{make_token(secret, cmd, '')}"


def report_from(data: dict[str, str], status: str, reason: str | None,
                provider_id: str | None) -> dict[str, Any]:
    return {"command_id": data["c"], "customer_id": data["cu"],
            "channel": data.get("ch") or "email", "status": status,
            "provider_id": provider_id, "reason": reason, "at": datetime.now(UTC),
            "journey": data["j"], "instance_key": data["k"] or None}


class ClickServer(BackgroundServer):
    """Serves ``GET /c/<token>`` (report the click, then redirect to the target),
    ``POST /u/<token>`` (one-click unsubscribe) and ``POST /s/<token>`` (a provider's
    delivery status callback)."""

    def __init__(self, secret: str, report: Callable[[dict[str, Any]], None],
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.report = report
        outer = self

        class Handler(QuietHandler):
            def _token(self, prefix: str) -> dict[str, str] | None:
                if not self.path.startswith(prefix):
                    return None
                return read_token(outer.secret, self.path.removeprefix(prefix).split("?")[0])

            def _form(self) -> dict[str, list[str]]:
                length = min(int(self.headers.get("Content-Length") or 0), 65536)
                return urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))

            def _page(self, html: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def do_GET(self) -> None:
                if (data := self._token("/u/")) is not None:
                    # RFC 8058: only a POST unsubscribes; a GET (a person, or a mail
                    # scanner following links) gets the button.
                    self._page(b'<form method="post"><input type="hidden" '
                               b'name="List-Unsubscribe" value="One-Click">'
                               b"<button>Unsubscribe</button></form>")
                    return
                data = self._token("/c/")
                if data is None or not data.get("u"):
                    self.send_error(400, "unknown or forged link")
                    return
                outer.report(report_from(data, "clicked", data["u"], None))
                self.send_response(302)
                self.send_header("Location", data["u"])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                form = self._form()
                if (data := self._token("/u/")) is not None:
                    outer.report(report_from(data, "unsubscribed", "one-click unsubscribe",
                                             None))
                    self._page(b"<p>You are unsubscribed.</p>")
                    return
                data = self._token("/s/")
                if data is None:
                    self.send_error(400, "unknown or forged link")
                    return
                raw = (form.get("MessageStatus") or form.get("status") or [""])[0].lower()
                status = PROVIDER_STATUSES.get(raw)
                if status is not None:
                    error = (form.get("ErrorCode") or [""])[0]
                    outer.report(report_from(
                        data, status, f"provider status {raw}" + (f" (error {error})"
                                                                  if error else ""),
                        (form.get("MessageSid") or [""])[0] or None))
                self.send_response(204)  # acknowledged either way: no provider retries
                self.end_headers()

        super().__init__(Handler, host, port, "tracking")
