"""Addresses from profiles are untrusted: validated before a provider sees them, and never
written anywhere in clear (logs, delivery reasons): a digest stands in for them.

An email address is one ASCII addr-spec (dot-atom local part, a domain of DNS labels):
no display name, no list, no comment, no quoted local part, no control characters. That
refuses a few exotic but valid addresses (quoted local parts, SMTPUTF8 mailboxes) in
exchange for a rule that cannot be talked into a second recipient. A phone number is
E.164: ``+``, a country code, at most 15 digits.
"""

from __future__ import annotations

import hashlib
import re

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# What looks like an address or a phone number inside free text (a provider's error
# message, an exception): replaced by its digest before the text is logged or reported.
_EMAILISH = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+\.[A-Za-z]{2,}")
_PHONEISH = re.compile(r"(?<![\w+])\+[0-9][0-9 ().-]{5,18}[0-9](?![\w])")


class InvalidAddress(ValueError):
    """The reason never quotes the address."""


def email_address(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidAddress("no email address")
    if _CONTROL.search(value):
        raise InvalidAddress("the email address contains control characters")
    if len(value) > 254 or not EMAIL.match(value) or len(value.split("@")[0]) > 64:
        raise InvalidAddress("not a single email address (addr-spec)")
    return value


def phone_number(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidAddress("no phone number")
    if not E164.match(value):
        raise InvalidAddress("not an E.164 phone number (+ and up to 15 digits)")
    return value


def header_text(value: object) -> str:
    """A header value (subject, preheader) with control characters, CR/LF above all,
    folded to single spaces: a rendered subject can never add a header."""
    return _CONTROL.sub(" ", str(value or "")).strip()


def digest(address: str) -> str:
    """How logs and reports name an address: stable, short, not the address."""
    return "sha256:" + hashlib.sha256(address.strip().lower().encode()).hexdigest()[:12]


def scrub(text: str | None) -> str | None:
    """Free text with every email address and phone number in it replaced by a digest."""
    if not text:
        return text
    text = _EMAILISH.sub(lambda m: digest(m.group(0)), text)
    return _PHONEISH.sub(lambda m: digest(re.sub(r"[^0-9+]", "", m.group(0))), text)
