"""Addresses out of free text: what a log line, a trace's error or a dead letter's reason
may quote (an exception about a profile value, a provider's reply naming the recipient)
holds a digest instead. Pure: the core's traces, the worker and the adapters share it."""

from __future__ import annotations

import hashlib
import re
from typing import overload

# What looks like an address or a phone number inside free text (a provider's error
# message, an exception): replaced by its digest before the text is logged or reported.
_EMAILISH = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+\.[A-Za-z]{2,}")
_PHONEISH = re.compile(r"(?<![\w+])\+[0-9][0-9 ().-]{5,18}[0-9](?![\w])")
_NOT_DIALED = re.compile(r"[^0-9+]")


def digest(address: str) -> str:
    """How logs and reports name an address: stable, short, not the address."""
    return "sha256:" + hashlib.sha256(address.strip().lower().encode()).hexdigest()[:12]


@overload
def scrub(text: str) -> str: ...


@overload
def scrub(text: None) -> None: ...


def scrub(text: str | None) -> str | None:
    """Free text with every email address and phone number in it replaced by a digest."""
    if not text:
        return text
    text = _EMAILISH.sub(lambda m: digest(m.group(0)), text)
    return _PHONEISH.sub(lambda m: digest(_NOT_DIALED.sub("", m.group(0))), text)


def brief(exc: BaseException, limit: int = 300) -> str:
    """An error for a log line, a trace or a reason: its type and the first ``limit``
    characters of its message, addresses scrubbed."""
    return scrub(f"{type(exc).__name__}: {str(exc)[:limit]}")
