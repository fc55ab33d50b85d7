"""Tracking: click redirects and provider status callbacks, reported as DeliveryReports.

A tracked link is ``<base>/c/<token>``; the token carries the command, customer, journey,
instance key, channel and the target URL, signed with HMAC-SHA256 so nobody can forge
clicks or turn the endpoint into an open redirect. A click publishes a DeliveryReport with
status ``clicked``; the engine folds it into e.g. an ``email.clicked`` event.

``<base>/p/<token>`` is the customer's preference page (tracking/preferences.py), when
the server is given one.

``<base>/h/<token>`` takes a helpdesk's answers to a hand-off (the webhook adapter sends
the URL with the request): a JSON body ``{"event": "handoff.accepted" |
"handoff.resolved" | "callback.completed", "agent"?, "outcome"?}`` becomes that event for
the customer, with the command and journey it answers.

``<base>/u/<token>`` is the one-click unsubscribe (RFC 8058) in marketing mail: a POST
reports ``unsubscribed``, which the engine folds into ``email.unsubscribed`` (consent
revoked); a GET only shows the button.

Providers that report a message's fate later (Twilio-style ``StatusCallback``) are given
``<base>/s/<token>`` with the same kind of token; their form POST (``MessageStatus``
``delivered``, ``undelivered``, ``failed`` …) becomes ``sms.delivered`` / ``sms.failed``.
"""

from __future__ import annotations

import hmac
import json
import re
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from omnijourney import wallclock
from omnijourney.core.commands import DeliveryReport, DeliveryStatus
from omnijourney.core.events import Event, InvalidEvent, check_text
from omnijourney.serving import BackgroundServer, QuietHandler
from omnijourney.tracking.preferences import HEADERS, PreferencePages, Reply
from omnijourney.tracking.tokens import (
    CLICK,
    HANDOFF,
    STATUS,
    UNSUBSCRIBE,
    read_token,
    twilio_signature,
)

# A redirect target: one line of an http(s) URL, nothing that could end the header.
_TARGET = re.compile(r"^https?://[^\x00-\x20\x7f]+$", re.IGNORECASE)


HANDOFF_EVENTS = frozenset({"handoff.accepted", "handoff.resolved", "callback.completed"})

# Provider callback status -> our DeliveryReport status; the rest (queued, sending,
# sent: already reported by the adapter) are acknowledged and dropped.
PROVIDER_STATUSES: dict[str, DeliveryStatus] = {
    "delivered": "delivered", "undelivered": "failed", "failed": "failed",
    "bounced": "bounced", "read": "opened", "opened": "opened"}


def report_from(data: dict[str, Any], status: DeliveryStatus, *, reason: str | None,
                provider_id: str | None, at: datetime,
                address: str | None = None) -> DeliveryReport:
    """The report a signed token's ``data`` makes. ``address``: the digest of the address
    the report is about, when the report names one (a DSN's Final-Recipient); else the
    token's."""
    return DeliveryReport(data["c"], data["cu"], data.get("ch") or "email", status, at,
                          provider_id=provider_id, reason=reason, journey=data["j"],
                          instance_key=data["k"] or None,
                          address_digest=address or data.get("a"))


class ClickServer(BackgroundServer):
    """Serves ``GET /c/<token>`` (report the click, then redirect to the target),
    ``POST /u/<token>`` (one-click unsubscribe) and ``POST /s/<token>`` (a provider's
    delivery status callback). Each path accepts only tokens made for it, and (with
    ``now``) only before they expire. With ``provider_token`` (the SMS provider's auth
    token) and ``public_url`` (the base the provider calls), a status callback must also
    carry the provider's X-Twilio-Signature."""

    def __init__(self, secret: str, report: Callable[[DeliveryReport], None],
                 host: str = "127.0.0.1", port: int = 0, *,
                 now: Callable[[], datetime] | None = None,
                 wall: Callable[[], datetime] = wallclock.now,
                 provider_token: str | None = None, public_url: str | None = None,
                 max_form: int = 16 * 1024,
                 preferences: PreferencePages | None = None,
                 events: Callable[[Event], None] | None = None) -> None:
        self.secret = secret
        self.report = report
        self.preferences = preferences
        self.events = events  # where a helpdesk's answers go (touchpoints)
        self.now, self.wall = now, wall  # expiry (None: none), report stamps
        self.counts: dict[str, int] = {}
        self.provider_token, self.public_url, self.max_form = provider_token, public_url, max_form
        handler = type("Handler", (_Handler,), {"tracker": self})
        super().__init__(handler, host, port, "tracking")


class _Handler(QuietHandler):
    tracker: ClickServer  # set on the subclass each server makes

    def _token(self, prefix: str, purpose: str) -> dict[str, Any] | None:
        if not self.path.startswith(prefix):
            return None
        return read_token(self.tracker.secret, self.path.removeprefix(prefix).split("?")[0],
                          purpose, self.tracker.now() if self.tracker.now else None)

    def _handoff_answer(self, answer: Any) -> None:
        data = self._token("/h/", HANDOFF) if self.tracker.events is not None else None
        if data is None:
            self._refuse("refused_handoff", 403)
            return
        if not isinstance(answer, dict) or answer.get("event") not in HANDOFF_EVENTS:
            self._refuse("refused_handoff", 400)
            return
        props: dict[str, Any] = {"command_id": data["c"], "journey": data["j"]}
        if data.get("k"):
            props["instance_key"] = data["k"]
        for key in ("agent", "outcome"):
            value = answer.get(key)
            if value is None or value == "":
                continue
            try:  # a short line of text, or the answer is refused
                if not isinstance(value, str):
                    raise InvalidEvent(f"'{key}' must be a string")
                check_text(key, value, 200)
            except InvalidEvent:
                self._refuse("refused_handoff", 400)
                return
            props[key] = value
        etype = answer["event"]
        assert self.tracker.events is not None
        self.tracker.events(Event(f"handoff:{data['c']}:{etype}", etype, data["cu"],
                                  self.tracker.wall(), "helpdesk", props))
        self.send_response(204)
        self.end_headers()

    def _form(self) -> dict[str, list[str]] | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length > self.tracker.max_form:
            return None
        return urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))

    def _page(self, html: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(html)))
        self.end_headers()
        self.wfile.write(html)

    def _reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        for name, value in HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.html)))
        self.end_headers()
        self.wfile.write(reply.html)

    def _preference_token(self) -> str | None:
        if self.tracker.preferences is None or not self.path.startswith("/p/"):
            return None
        return self.path.removeprefix("/p/").split("?")[0]

    def _refuse(self, why: str, code: int = 400) -> None:
        self.tracker.counts[why] = self.tracker.counts.get(why, 0) + 1
        self.send_error(code, "unknown, expired or forged link")

    def do_GET(self) -> None:
        token = self._preference_token()
        if token is not None and self.tracker.preferences is not None:
            self._reply(self.tracker.preferences.show(token))
            return
        if self.path.startswith("/u/"):
            if self._token("/u/", UNSUBSCRIBE) is None:
                self._refuse("refused_unsubscribe")
                return
            # RFC 8058: only a POST unsubscribes; a GET (a person, or a mail
            # scanner following links) gets the button.
            self._page(b'<form method="post"><input type="hidden" '
                       b'name="List-Unsubscribe" value="One-Click">'
                       b"<button>Unsubscribe</button></form>")
            return
        data = self._token("/c/", CLICK)
        if data is None or not _TARGET.match(str(data.get("u") or "")):
            self._refuse("refused_click")
            return
        self.tracker.report(report_from(data, "clicked", reason=None, provider_id=None,
                                        at=self.tracker.wall()))
        self.send_response(302)
        self.send_header("Location", data["u"])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        if self.path.startswith("/h/"):
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > self.tracker.max_form:
                    raise ValueError("too long")
                answer = json.loads(self.rfile.read(length) or b"null")
            except ValueError:  # also not UTF-8, not JSON
                self._refuse("refused_handoff", 400)
                return
            self._handoff_answer(answer)
            return
        form = self._form()
        if form is None:
            self._refuse("refused_form", 413)
            return
        token = self._preference_token()
        if token is not None and self.tracker.preferences is not None:
            reply = self.tracker.preferences.save(token, form)
            if reply.status != 200:
                self.tracker.counts["refused_preferences"] = \
                    self.tracker.counts.get("refused_preferences", 0) + 1
            self._reply(reply)
            return
        if self.path.startswith("/u/"):
            data = self._token("/u/", UNSUBSCRIBE)
            if data is None:
                self._refuse("refused_unsubscribe")
                return
            self.tracker.report(report_from(data, "unsubscribed", reason="one-click unsubscribe",
                                            provider_id=None, at=self.tracker.wall()))
            self._page(b"<p>You are unsubscribed.</p>")
            return
        data = self._token("/s/", STATUS)
        if data is None:
            self._refuse("refused_status")
            return
        token, public = self.tracker.provider_token, self.tracker.public_url
        if token and public:
            url = public.rstrip("/") + self.path
            given = self.headers.get("X-Twilio-Signature") or ""
            if not hmac.compare_digest(given, twilio_signature(token, url, form)):
                self._refuse("refused_signature", 403)
                return
        raw = (form.get("MessageStatus") or form.get("status") or [""])[0].lower()
        status = PROVIDER_STATUSES.get(raw)
        if status is not None:
            error = (form.get("ErrorCode") or [""])[0][:20]
            self.tracker.report(report_from(
                data, status, reason=f"provider status {raw}" + (f" (error {error})"
                                                                 if error else ""),
                provider_id=(form.get("MessageSid") or [""])[0][:64] or None,
                at=self.tracker.wall()))
        self.send_response(204)  # acknowledged either way: no provider retries
        self.end_headers()

