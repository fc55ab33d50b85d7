"""Addresses from profiles are untrusted: validated before a provider sees them, and never
written anywhere in clear (logs, delivery reasons): a digest stands in for them
(``core.redaction``).

An email address is one ASCII addr-spec (dot-atom local part, a domain of DNS labels):
no display name, no list, no comment, no quoted local part, no control characters. That
refuses a few exotic but valid addresses (quoted local parts, SMTPUTF8 mailboxes) in
exchange for a rule that cannot be talked into a second recipient. A phone number is
E.164: ``+``, a country code, at most 15 digits.
"""

from __future__ import annotations

import re

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


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
