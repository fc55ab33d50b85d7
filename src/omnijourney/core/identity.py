"""Identity resolution: which customer an event is about, and when two are one.

Pure rules, shared by the live resolver (``runtime/resolver.py``) and the simulator.

**Identifiers.** An event may carry ``identifiers`` (``{"anonymous_id": "a-1", "email":
"ana@example.com"}``) instead of, or beside, ``customer_id``. Kinds: ``loyalty_id``,
``email``, ``phone``, ``marketplace:<name>``, ``device_id``, ``anonymous_id``. Values are
normalized (an email trimmed and lower-cased, a phone reduced to ``+`` and digits) and
every identifier has a key, ``<kind>:<digest>``: the identity table is keyed by it and
no address appears in a Kafka key.

**Resolution.** The identity table maps identifier keys to customers. An event visits
its identifiers strongest first (the order above; ``IDENTIFIER_ORDER``), one hop per
identifier, each on the partition that owns it, so every identifier has one writer:
- the first identifier names the event's customer: the ``customer_id`` the event
  carries, else the identifier's customer, else a new customer whose id is derived
  from that identifier (``generated_id``), so a replay finds the same one;
- an identifier nobody holds is claimed for that customer;
- an identifier another customer holds links the two, if its kind may merge customers
  (``identity.merge_on``); a kind that may not (a shared device) is left with its owner
  and the refusal is traced.

**Merging.** The event is applied to its customer; each link then becomes a merge,
settled between the two customers' own partitions by messages (``MergeOffer``,
``Handover``, ``Absorbed``) that travel like events and are deduplicated by their ids:
the customer the event reached offers the merge, with its identifiers, to the other;
that one checks the guard (``identity.max_per_customer``: together they may not hold more
identifiers of a kind than one person has) and, when the merge may go ahead, whichever
of the two is the survivor (``survivor``: an id the shop gave beats one generated here,
then the smaller id) receives the other's whole state (``Absorbed``) and folds it in
(``merge_states``). The absorbed customer keeps only a redirect: what still arrives for it
goes on to the survivor.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from omnijourney.core.timeutil import format_instant, parse_instant

# Strongest first: the first identifier an event carries, in this order, names its
# customer when it carries no customer_id.
IDENTIFIER_ORDER = ("loyalty_id", "email", "phone", "marketplace", "device_id", "anonymous_id")
_KIND = re.compile(
    r"^(loyalty_id|email|phone|device_id|anonymous_id|marketplace:[a-z0-9_-]{1,40})$")
MAX_IDENTIFIERS_PER_EVENT = 8
MAX_IDENTIFIER_CHARS = 200
GENERATED_PREFIX = "cus_"  # ids this engine makes for customers first seen by an identifier
ADDRESS_KINDS = ("email", "phone")  # kept in profiles as digests: the trait holds the address


class InvalidIdentifier(ValueError):
    pass


def family(kind: str) -> str:
    """``marketplace:amazon`` -> ``marketplace``; the policies name families."""
    return kind.split(":", 1)[0]


def normalize(kind: str, value: object) -> str:
    """The identifier's canonical value; InvalidIdentifier naming the problem."""
    if not _KIND.match(kind):
        raise InvalidIdentifier(f"identifier kind {kind[:60]!r} is not one of "
                                f"{', '.join(IDENTIFIER_ORDER[:-3])}, marketplace:<name>, "
                                "device_id, anonymous_id")
    if not isinstance(value, str):
        raise InvalidIdentifier(f"identifier {kind} must be a string")
    text = value.strip()
    if not text:
        raise InvalidIdentifier(f"identifier {kind} is empty")
    if len(text) > MAX_IDENTIFIER_CHARS:
        raise InvalidIdentifier(f"identifier {kind} is longer than {MAX_IDENTIFIER_CHARS} "
                                "characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidIdentifier(f"identifier {kind} contains control characters")
    if kind == "email":
        text = text.lower()
        local, at, domain = text.partition("@")
        if not (local and at and "." in domain) or " " in text:
            raise InvalidIdentifier("identifier email is not an email address")
    elif kind == "phone":
        digits = "".join(c for c in text if c.isdigit())
        if not 6 <= len(digits) <= 15:
            raise InvalidIdentifier("identifier phone needs 6 to 15 digits")
        text = ("+" if text.startswith("+") else "") + digits
    return text


def parse_identifiers(raw: object) -> dict[str, str]:
    """An event's ``identifiers`` object, normalized, in canonical order (strongest first)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidIdentifier("'identifiers' must be an object of kind: value")
    if len(raw) > MAX_IDENTIFIERS_PER_EVENT:
        raise InvalidIdentifier(f"an event carries at most {MAX_IDENTIFIERS_PER_EVENT} "
                                "identifiers")
    values = {str(kind): normalize(str(kind), value) for kind, value in raw.items()}
    return {kind: values[kind] for kind in sorted(values, key=_rank)}


def _rank(kind: str) -> tuple[int, str]:
    return IDENTIFIER_ORDER.index(family(kind)), kind


def digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}|{value}".encode()).hexdigest()[:32]


def identifier_key(kind: str, value: str) -> str:
    """The identity table's key for an identifier (normalized value): no address in it."""
    return f"{kind}:{digest(kind, value)}"


def profile_value(kind: str, value: str) -> str:
    """How a customer's profile keeps an identifier: addresses as digests (the clear
    address is the ``email`` or ``phone`` trait), the others as they are."""
    return "sha256:" + digest(kind, value) if kind in ADDRESS_KINDS else value


def generated_id(key: str) -> str:
    """The id of a customer first seen by the identifier ``key``: the same on a replay."""
    return GENERATED_PREFIX + hashlib.sha256(f"customer|{key}".encode()).hexdigest()[:24]


def survivor(a: str, b: str) -> str:
    """Which of two customers a merge keeps: an id the shop gave (from its own systems)
    beats one generated here; between two of a kind, the smaller. A rule on the pair,
    not on the event, so two merges of the same pair started from either side agree."""
    return min(a, b, key=lambda c: (c.startswith(GENERATED_PREFIX), c))


# ---------------------------------------------------------------- policies

DEFAULT_MERGE_ON = ("loyalty_id", "email", "phone", "marketplace", "anonymous_id")
DEFAULT_MAX_PER_CUSTOMER = {"loyalty_id": 1, "email": 3, "phone": 3, "marketplace": 5,
                            "device_id": 10, "anonymous_id": 50}


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    merge_on: frozenset[str] = frozenset(DEFAULT_MERGE_ON)  # families that may join two
    max_per_customer: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_MAX_PER_CUSTOMER))

    def limit(self, kind: str) -> int:
        return self.max_per_customer.get(family(kind), 50)


# -------------------------------------------------------------- resolution

@dataclass(frozen=True, slots=True)
class Resolution:
    """An event on its way through its identifiers' partitions (one hop each)."""

    event: dict[str, Any]  # the event's JSON form, as it came (customer_id may be "")
    keys: tuple[tuple[str, str], ...]  # (kind, identifier key), strongest first
    hop: int = 0
    customer: str | None = None
    links: tuple[str, ...] = ()  # other customers an identifier of this event belongs to
    refused: tuple[tuple[str, str], ...] = ()  # (kind, owner) not linked: kind may not merge
    # The event named its customer and was applied there already: only its identifiers
    # are to be claimed and linked (``Linked``), so it is never held up behind them.
    link_only: bool = False

    @property
    def done(self) -> bool:
        return self.hop >= len(self.keys)

    @property
    def key(self) -> str:
        """The identifier this hop is on (the resolver topic's record key)."""
        return self.keys[self.hop][1]

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "keys": [list(k) for k in self.keys], "hop": self.hop,
                "customer": self.customer, "links": list(self.links),
                "refused": [list(r) for r in self.refused], "link_only": self.link_only}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Resolution:
        return cls(event=dict(d["event"]), keys=tuple((str(k), str(v)) for k, v in d["keys"]),
                   hop=int(d["hop"]), customer=d.get("customer"),
                   links=tuple(map(str, d.get("links") or ())),
                   refused=tuple((str(k), str(o)) for k, o in d.get("refused") or ()),
                   link_only=bool(d.get("link_only")))


def start(event: dict[str, Any], identifiers: Mapping[str, str]) -> Resolution:
    """The first hop of an event's resolution. An event that names its customer
    (``customer_id`` not empty) is applied there at once; its resolution only links."""
    keys = tuple((kind, identifier_key(kind, value)) for kind, value in identifiers.items())
    customer = event.get("customer_id") or None
    if customer is not None:  # only what linking needs travels on
        event = {"event_id": event["event_id"], "occurred_at": event["occurred_at"]}
    return Resolution(event=event, keys=keys, customer=customer,
                      link_only=customer is not None)


def visit(res: Resolution, owner: str | None, policy: IdentityPolicy
          ) -> tuple[str | None, Resolution]:
    """One hop: ``owner`` is who the identity table says holds this hop's identifier.
    Returns the customer to record as its holder (None: leave the table as it is) and
    the resolution moved on by one hop."""
    kind, key = res.keys[res.hop]
    customer, links, refused = res.customer, res.links, res.refused
    claim: str | None = None
    if customer is None:
        customer = owner or generated_id(key)
        claim = None if owner else customer
    elif owner is None:
        claim = customer
    elif owner != customer and owner not in links:
        if family(kind) in policy.merge_on:
            links = (*links, owner)
        else:
            refused = (*refused, (kind, owner))
    return claim, Resolution(res.event, res.keys, res.hop + 1, customer, links, refused,
                             res.link_only)


# ---------------------------------------------------------- merge messages

@dataclass(frozen=True, slots=True)
class MergeOffer:
    """From ``sender`` (who an event linked to ``to``) to ``to``: merge us, here are my
    identifiers (kind -> the values its profile keeps)."""

    sender: str
    to: str
    identifiers: dict[str, list[str]]
    at: datetime

    @property
    def customer_id(self) -> str:
        return self.to

    @property
    def id(self) -> str:
        return f"merge-offer:{self.sender}:{self.to}"


@dataclass(frozen=True, slots=True)
class Handover:
    """From the survivor to the customer it absorbs: send me your state."""

    absorbed: str
    survivor: str
    identifiers: dict[str, list[str]]  # the survivor's, should the absorbed one have moved on
    at: datetime

    @property
    def customer_id(self) -> str:
        return self.absorbed

    @property
    def id(self) -> str:
        return f"merge-handover:{self.absorbed}:{self.survivor}"


@dataclass(frozen=True, slots=True)
class Absorbed:
    """The absorbed customer's whole state, on its way to the survivor."""

    absorbed: str
    survivor: str
    state: dict[str, Any]  # CustomerState.to_dict() of the absorbed customer
    at: datetime

    @property
    def customer_id(self) -> str:
        return self.survivor

    @property
    def id(self) -> str:
        return f"merge-absorbed:{self.absorbed}:{self.survivor}"


MergeMessage = MergeOffer | Handover | Absorbed


def message_to_dict(msg: MergeMessage) -> dict[str, Any]:
    at = format_instant(msg.at)
    if isinstance(msg, MergeOffer):
        return {"offer": {"sender": msg.sender, "to": msg.to,
                          "identifiers": msg.identifiers, "at": at}}
    if isinstance(msg, Handover):
        return {"handover": {"absorbed": msg.absorbed, "survivor": msg.survivor,
                             "identifiers": msg.identifiers, "at": at}}
    return {"absorbed": {"absorbed": msg.absorbed, "survivor": msg.survivor,
                         "state": msg.state, "at": at}}


def message_from_dict(d: Mapping[str, Any]) -> MergeMessage:
    if "offer" in d:
        o = d["offer"]
        return MergeOffer(str(o["sender"]), str(o["to"]), _ids(o.get("identifiers")),
                          parse_instant(o["at"]))
    if "handover" in d:
        h = d["handover"]
        return Handover(str(h["absorbed"]), str(h["survivor"]), _ids(h.get("identifiers")),
                        parse_instant(h["at"]))
    a = d["absorbed"]
    if not isinstance(a.get("state"), Mapping):
        raise ValueError("an absorbed state must be an object")
    return Absorbed(str(a["absorbed"]), str(a["survivor"]), dict(a["state"]),
                    parse_instant(a["at"]))


def _ids(raw: object) -> dict[str, list[str]]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): [str(v) for v in vs] for k, vs in raw.items() if isinstance(vs, list)}


def too_many(mine: Mapping[str, list[str]], theirs: Mapping[str, list[str]],
             policy: IdentityPolicy) -> tuple[str, int] | None:
    """The guard: the first kind of which two customers together would hold more
    identifiers than one customer may (with that limit), or None."""
    for kind in sorted(set(mine) | set(theirs)):
        together = set(mine.get(kind, ())) | set(theirs.get(kind, ()))
        if len(together) > policy.limit(kind):
            return kind, policy.limit(kind)
    return None
