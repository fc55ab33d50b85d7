"""Signed tokens and tracked links: what the adapters put in a message so that a click,
an unsubscribe, a provider's status callback or a bounce can be attributed to its command
and trusted. HMAC-SHA256, one purpose per token, an expiry after the send time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta
from typing import Any

from omnijourney.core.commands import ChannelCommand
from omnijourney.core.profile import address_digest

# Carries a message's signed token in outgoing mail, so that bounces and complaints,
# which return the headers, can be attributed (``omnijourney bounces``).
REPORT_HEADER = "X-Omnijourney-Report"


_HREF = re.compile(r'(href\s*=\s*")(https?://[^"\x00-\x20\x7f]+)(")', re.IGNORECASE)


_BARE = re.compile(r"(?<![\"'=])(https?://[^\s<>\"']+)")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# What a token may be used for, and for how long after its message's send time.
CLICK, UNSUBSCRIBE, STATUS, REPORT = "c", "u", "s", "r"
PREFERENCES, FORM = "m", "f"  # a preference page link; one form served on that page
HANDOFF = "h"  # where a helpdesk reports on a hand-off


TOKEN_TTL = {CLICK: timedelta(days=90),  # a link in a newsletter still read weeks later
             UNSUBSCRIBE: timedelta(days=365),  # one-click unsubscribe must keep working
             STATUS: timedelta(days=7),  # providers report a message's fate within hours
             REPORT: timedelta(days=30),  # DSNs come back within days
             PREFERENCES: timedelta(days=365),  # "manage your preferences" in any message
             FORM: timedelta(hours=1),  # a page's form, filled in and posted
             HANDOFF: timedelta(days=30)}  # a conversation or call-back, and its outcome


def make_signed(secret: str, purpose: str, issued: datetime, *, ttl: float | None = None,
                **fields: Any) -> str:
    """A signed token for ``purpose`` carrying ``fields``, valid from ``issued`` for
    ``ttl`` seconds (default TOKEN_TTL[purpose])."""
    span = timedelta(seconds=ttl) if ttl is not None else TOKEN_TTL[purpose]
    body = {"p": purpose, "x": int((issued + span).timestamp()), **fields}
    return _sign(secret, body)


def _sign(secret: str, body: dict[str, Any]) -> str:
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()[:16])
    return f"{payload}.{sig}"


def make_token(secret: str, cmd: ChannelCommand, url: str, purpose: str = CLICK) -> str:
    """A signed token for ``purpose``, valid until the send time plus TOKEN_TTL[purpose];
    bounce and status tokens carry the digest of the address the message went to."""
    expires = int((cmd.send_at + TOKEN_TTL[purpose]).timestamp())
    body: dict[str, Any] = {"p": purpose, "x": expires, "c": cmd.command_id,
                            "cu": cmd.customer_id, "j": cmd.journey,
                            "k": cmd.instance_key or "",
                            "ch": cmd.channel or "email"}
    if purpose == CLICK:
        body["u"] = url
    if purpose in (STATUS, REPORT) and cmd.to:
        body["a"] = address_digest(str(cmd.to))
    return _sign(secret, body)


def read_token(secret: str, token: str, purpose: str,
               now: datetime | None = None) -> dict[str, Any] | None:
    """The token's data if it is signed with ``secret``, made for ``purpose`` and (when
    ``now`` is given) not expired; None otherwise. A click token never unsubscribes, an
    unsubscribe token never reports a bounce."""
    payload, _, sig = token.partition(".")
    want = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()[:16])
    if not sig or not hmac.compare_digest(sig, want):
        return None
    try:
        data = json.loads(_unb64(payload))
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("p") != purpose:
        return None
    if now is not None and not (isinstance(data.get("x"), int)
                                and now.timestamp() <= data["x"]):
        return None
    return data


def twilio_signature(auth_token: str, url: str, form: dict[str, list[str]]) -> str:
    """How Twilio signs a callback (X-Twilio-Signature): HMAC-SHA1 over the full URL and
    each POST parameter's name and value, sorted by name, base64."""
    data = url + "".join(k + v for k in sorted(form) for v in form[k])
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(),
                                     hashlib.sha1).digest()).decode()


def track(text: str, cmd: ChannelCommand, base: str, secret: str, *, html: bool) -> str:
    """Rewrite every http(s) link in an HTML or text body to its tracked form."""
    def wrap(url: str) -> str:
        return f"{base.rstrip('/')}/c/{make_token(secret, cmd, url, CLICK)}"

    if html:
        return _HREF.sub(lambda m: m.group(1) + wrap(m.group(2)) + m.group(3), text)
    return _BARE.sub(lambda m: wrap(m.group(1)), text)


def status_callback_url(base: str, secret: str, cmd: ChannelCommand) -> str:
    return f"{base.rstrip('/')}/s/{make_token(secret, cmd, '', STATUS)}"
