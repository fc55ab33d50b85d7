"""Bounces and complaints that arrive later, by mail: an SMTP receiver that turns them into
DeliveryReports.

Most mail goes through a relay that accepts it at once and bounces later, to the
envelope sender, as a delivery status notification (RFC 3464) -- so a refused mailbox
rarely shows up as an SMTP error while sending. Point the return path's MX (or the
relay's bounce forwarding) at ``omnijourney bounces``; it reads

- DSNs (``multipart/report; report-type=delivery-status``): ``Action: failed`` with a
  5.x.x status is a hard bounce (``bounced``: the engine stops mailing that address),
  with a 4.x.x status a message the relay gave up on (``failed``); ``delivered`` (with
  NOTIFY=SUCCESS) is ``delivered``; ``delayed`` is only news and ignored;
- complaints (ARF, RFC 5965, ``report-type=feedback-report``): ``unsubscribed``, because
  someone who marks mail as spam wants no more of it.

The email adapter signs each message's identity into an ``X-Omnijourney-Report`` header
(the same HMAC token as tracked links) and asks the relay to return headers with a DSN
(``RET=HDRS``). A report is attributed only through a valid token in the returned
headers, so nobody can forge bounces. Everything else is accepted and dropped (a bounce
of a bounce must never start a loop), with a count per outcome.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import datetime
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from omnijourney import wallclock
from omnijourney.core.commands import DeliveryReport, delivery_status
from omnijourney.core.profile import address_digest
from omnijourney.core.redaction import scrub
from omnijourney.tracking.clicks import report_from
from omnijourney.tracking.tokens import REPORT, REPORT_HEADER, read_token

_RETURNED = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")


def read_bounce(raw: bytes, secret: str, now: datetime | None = None,
                wall: Callable[[], datetime] = wallclock.now,
                ) -> tuple[str, DeliveryReport | None]:
    """(outcome, DeliveryReport or None). Outcomes: bounced, failed, delivered,
    unsubscribed (a report to publish); delayed, unattributed, not_a_report (none).

    The report names the address that bounced by its digest: the DSN's Final-Recipient
    (RFC 3464), else the address the signed header says the message went to. A bounce
    for an address that is not the customer's current one suppresses nothing current."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if msg.get_content_type() != "multipart/report":
        return "not_a_report", None
    kind = str(msg.get_param("report-type") or "").lower()
    recipient = None
    if kind == "delivery-status":
        status, reason, recipient = _delivery_status(msg)
    elif kind == "feedback-report":
        status, reason = "unsubscribed", f"complaint: {_feedback_type(msg)}"
    else:
        return "not_a_report", None
    if status == "delayed":
        return status, None
    token = _returned_token(msg)
    data = read_token(secret, token, REPORT, now) if token else None
    if data is None:
        return "unattributed", None
    return status, report_from(data, delivery_status(status), reason=scrub(reason),
                               provider_id=None, at=wall(),
                               address=address_digest(recipient) if recipient else None)


def _delivery_status(msg: Message) -> tuple[str, str, str | None]:
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        # The first block describes the message; each further one a recipient.
        for block in _blocks(part)[1:]:
            action = str(block.get("Action", "")).strip().lower()
            code = str(block.get("Status", "")).strip()
            diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
            reason = f"{code} {diagnostic}".strip()[:300]
            recipient = _final_recipient(block)
            if action == "failed":
                return ("bounced" if code.startswith("5") else "failed"), reason, recipient
            if action == "delivered":
                return "delivered", reason, recipient
            if action == "delayed":
                return "delayed", reason, recipient
    return "delayed", "", None  # nothing final in it


def _final_recipient(block: Message) -> str | None:
    """``Final-Recipient: rfc822; ana@example.com`` (or Original-Recipient) -> the address."""
    for name in ("Final-Recipient", "Original-Recipient"):
        value = str(block.get(name, "") or "")
        kind, _, addr = value.partition(";")
        addr = addr.strip().strip("<>").strip()
        if kind.strip().lower() == "rfc822" and "@" in addr:
            return addr
    return None


def _feedback_type(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            for block in _blocks(part)[:1]:
                return str(block.get("Feedback-Type", "abuse")).strip()
    return "abuse"


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status (or feedback-report) part."""
    payload = part.get_payload()
    return [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []


def _returned_token(msg: Message) -> str | None:
    for part in msg.walk():
        kind = part.get_content_type()
        if kind not in _RETURNED:
            continue
        headers: Message | None
        if kind == "message/rfc822":
            inner = _blocks(part)
            headers = inner[0] if inner else None
        else:
            body = part.get_payload(decode=True)
            headers = (email.message_from_bytes(body) if isinstance(body, bytes)
                       else None)
        token = headers.get(REPORT_HEADER) if headers is not None else None
        if token:
            return "".join(str(token).split())
    return None


# DSNs return only headers (RET=HDRS); a complaint may quote a whole message. Anything
# larger is refused at DATA (552) before it is read into memory.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
SESSION_TIMEOUT = 60.0  # seconds a silent client may hold a connection


class BounceServer:
    """A real SMTP server (aiosmtpd) that reads each incoming mail with ``read_bounce``
    and hands the DeliveryReports to ``report``. Every mail of at most
    ``MAX_MESSAGE_BYTES`` is accepted (and only attributed ones reported)."""

    def __init__(self, secret: str, report: Callable[[DeliveryReport], None], *,
                 host: str = "127.0.0.1", port: int = 2525,
                 now: Callable[[], datetime] | None = None,
                 wall: Callable[[], datetime] = wallclock.now,
                 max_bytes: int = MAX_MESSAGE_BYTES, timeout: float = SESSION_TIMEOUT) -> None:
        self.secret, self.report, self.now, self.wall = secret, report, now, wall
        self.counts: dict[str, int] = {}
        self.port = port
        self.controller = Controller(self, hostname=host, port=port,
                                     data_size_limit=max_bytes, timeout=timeout)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            outcome, rep = read_bounce(envelope.content, self.secret,
                                       self.now() if self.now else None, self.wall)
        except Exception:
            outcome, rep = "unreadable", None
        if rep is not None:
            try:
                self.report(rep)
            except Exception:  # the broker is away: a 4xx makes the MTA retry later
                return "451 4.3.0 cannot record the report now, try again later"
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return "250 OK"

    def start(self) -> BounceServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
