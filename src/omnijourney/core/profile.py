"""Folding touchpoint events into the unified customer profile."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from omnijourney.core.catalog import Policies
from omnijourney.core.channels import CHANNELS, PERSONAL_CHANNELS
from omnijourney.core.events import Event
from omnijourney.core.identity import ADDRESS_KINDS, IdentityPolicy, profile_value
from omnijourney.core.timeutil import ContactWindow, format_instant, is_known_zone

TRAITS = ("email", "phone", "push_token", "first_name", "last_name", "locale", "timezone",
          "contact_window", "country")
OPT_INS = {"email_opt_in": "email", "sms_opt_in": "sms", "push_opt_in": "push",
           "ads_opt_in": "ads"}
TRAIT_EVENTS = frozenset({"customer.signed_up", "customer.updated"})
# What the preference page saves (tracking/preferences.py): channels and topics chosen,
# the contact window and time zone, or everything unsubscribed.
PREFERENCES_EVENT = "preferences.updated"
# The profile trait each personal channel delivers to; ``<channel>.bounced`` (a hard
# bounce, a dead push token, a number that cannot take messages) marks that address.
ADDRESS_TRAITS = {"email": "email", "sms": "phone", "push": "push_token"}


def _bad_zone(value: object) -> str | None:
    if isinstance(value, str) and is_known_zone(value):
        return None
    return "not an IANA time zone (e.g. Europe/Berlin)"


def _bad_window(value: object) -> str | None:
    try:
        ContactWindow.parse(str(value))
    except ValueError:
        return "not a contact window (e.g. 09:00-21:00)"
    return None if isinstance(value, str) else "not a contact window (e.g. 09:00-21:00)"


# Traits the engine acts on, checked as they arrive: an invalid one is refused (the last
# valid value stays) and the refusal is traced, rather than silently becoming the default.
CHECKED_TRAITS = {"timezone": _bad_zone, "contact_window": _bad_window}


MAX_CHANNELS = 32  # sources remembered per customer (web, app, store, marketplace ...)


def fold(profile: dict[str, Any], event: Event,
         identity: IdentityPolicy | None = None) -> list[tuple[str, str]]:
    """Apply one event to a profile in place (the caller owns a fresh copy). Returns the
    traits refused, each with the reason (the value itself is not repeated)."""
    refused: list[tuple[str, str]] = []
    props = event.properties
    if not profile:
        profile.update(customer_id=event.customer_id, consent={}, attributes={}, counts={},
                       first_seen_at=format_instant(event.occurred_at))
    profile["last_seen_at"] = format_instant(event.occurred_at)
    counts = profile["counts"]
    counts[event.type] = counts.get(event.type, 0) + 1
    if event.identifiers:
        learn_identifiers(profile, event.identifiers, identity or IdentityPolicy())
    if event.source and not event.event_id.startswith("delivery:"):
        seen_on(profile, event.source, format_instant(event.occurred_at))
    if event.type in TRAIT_EVENTS:
        for key, value in props.items():
            if key in TRAITS:
                if value is None:
                    profile.pop(key, None)
                elif key in CHECKED_TRAITS and (why := CHECKED_TRAITS[key](value)):
                    refused.append((key, why))
                else:
                    profile[key] = value
            elif key in OPT_INS:
                profile["consent"][OPT_INS[key]] = bool(value)
            else:
                profile["attributes"][key] = value
        if event.type == "customer.signed_up":
            profile["signed_up_at"] = format_instant(event.occurred_at)
    elif event.type == PREFERENCES_EVENT:
        refused += _preferences(profile, props)
    elif event.type == "consent.updated":
        channel = props.get("channel")
        if channel in CHANNELS and isinstance(props.get("granted"), bool):
            profile["consent"][channel] = props["granted"]
    elif event.type.endswith(".unsubscribed"):
        channel = event.type.split(".", 1)[0]
        if channel in CHANNELS:
            profile["consent"][channel] = False
    elif event.type.endswith(".bounced"):
        channel = event.type.split(".", 1)[0]
        if channel not in ADDRESS_TRAITS:
            return refused
        # The address that bounced, as the adapter or the DSN's Final-Recipient named it;
        # only a report that names none (an older adapter) falls back to the current one.
        named = props.get("address_digest")
        if isinstance(named, str) and len(named) == 64:
            mark = named.lower()
        else:
            current = address(profile, channel)
            if current is None:
                return refused
            mark = address_digest(current)
        # Digests, never a second copy of an address; a new address is not bounced.
        marks = profile.setdefault("bounced", {})
        held = marks.get(channel)
        kept = [held] if isinstance(held, str) else list(held or [])
        if mark not in kept:
            kept = [*kept, mark][-BOUNCED_KEPT:]
        marks[channel] = kept
    return refused


BOUNCED_KEPT = 8  # bounced addresses remembered per channel
MAX_TOPICS = 64  # subscription choices kept per customer


def _preferences(profile: dict[str, Any], props: Any) -> list[tuple[str, str]]:
    refused: list[tuple[str, str]] = []
    channels = props.get("channels")
    if isinstance(channels, dict):
        for ch, granted in channels.items():
            if ch in CHANNELS and isinstance(granted, bool):
                profile["consent"][ch] = granted
    topics = props.get("topics")
    if isinstance(topics, dict):
        subs = profile.setdefault("subscriptions", {})
        for topic, chosen in list(topics.items())[:MAX_TOPICS]:
            if isinstance(topic, str) and len(topic) <= 64 and isinstance(chosen, bool):
                subs[topic] = chosen
        profile["subscriptions"] = dict(list(subs.items())[-MAX_TOPICS:])
    if props.get("unsubscribe_all") is True:
        for ch in CHANNELS:
            profile["consent"][ch] = False
        profile["subscriptions"] = dict.fromkeys(profile.get("subscriptions", {}), False)
    for key in ("contact_window", "timezone"):
        if key not in props:
            continue
        value = props[key]
        if value is None or value == "":
            profile.pop(key, None)
        elif (why := CHECKED_TRAITS[key](value)):
            refused.append((key, why))
        else:
            profile[key] = value
    return refused


def subscribed(profile: dict[str, Any], topic: str, policies: Policies) -> bool:
    """Whether a marketing message of ``topic`` may go: opt_in topics need the customer
    to have subscribed, opt_out topics only that they did not unsubscribe. A topic the
    policies do not name is treated as opt_in (validation refuses such sends)."""
    chosen = profile.get("subscriptions", {}).get(topic)
    return _permitted(chosen, policies.topics.get(topic, (frozenset(), "opt_in"))[1])


def _permitted(chosen: object, mode: str) -> bool:
    """The customer's own choice (True, False, None: never said) under a policy mode:
    opt_in needs a yes, opt_out only no "no", anything else needs nothing."""
    if mode == "opt_in":
        return chosen is True
    if mode == "opt_out":
        return chosen is not False
    return True


def learn_identifiers(profile: dict[str, Any], identifiers: Mapping[str, str],
                      policy: IdentityPolicy) -> None:
    """``profile.identifiers``: kind -> the values seen, latest last, at most the policy's
    limit per kind (the oldest go first); an address as its digest, and an email or
    phone identifier fills that trait when the profile has none."""
    held = profile.setdefault("identifiers", {})
    for kind, value in identifiers.items():
        if kind in ADDRESS_KINDS and not _nonblank(profile.get(kind)):
            profile[kind] = value
        mine = profile_value(kind, value)
        kept = [v for v in held.get(kind, ()) if v != mine]
        held[kind] = [*kept, mine][-policy.limit(kind):]


def seen_on(profile: dict[str, Any], source: str, at: str) -> None:
    """``profile.channels``: each source a customer has been seen on (web, app, store,
    marketplace ...) with the first and last time; at most MAX_CHANNELS, the least
    recent go first."""
    channels = profile.setdefault("channels", {})
    entry = channels.get(source)
    if entry is None:
        if len(channels) >= MAX_CHANNELS:
            del channels[min(channels, key=lambda c: channels[c]["last_seen_at"])]
        channels[source] = {"first_seen_at": at, "last_seen_at": at}
    else:
        channels[source] = {"first_seen_at": min(entry["first_seen_at"], at),
                            "last_seen_at": max(entry["last_seen_at"], at)}


def bounced(profile: dict[str, Any], channel: str) -> bool:
    """Whether the customer's current address on ``channel`` hard-bounced."""
    held = profile.get("bounced", {}).get(channel)
    if not held:
        return False
    current = address(profile, channel)
    if current is None:
        return False
    marks = [held] if isinstance(held, str) else held  # a string: states before lists
    return address_digest(current) in marks


def address_digest(address: str) -> str:
    """SHA-256 of an address, trimmed and lower-cased: how state and reports name one."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()



def consent_ok(profile: dict[str, Any], channel: str, policies: Policies) -> bool:
    return _permitted(profile.get("consent", {}).get(channel),
                      policies.consent.get(channel, "opt_in"))


def address(profile: dict[str, Any], channel: str) -> str | None:
    """Where a message on ``channel`` goes, or None when the customer has no address there."""
    if channel in ADDRESS_TRAITS:
        return _nonblank(profile.get(ADDRESS_TRAITS[channel]))
    if channel == "ads":
        # Ad platforms match audiences on hashed identifiers, never the clear address.
        email = _nonblank(profile.get("email"))
        if email:
            return "sha256:" + address_digest(email)
        phone = _nonblank(profile.get("phone"))
        if phone:
            digits = "".join(c for c in phone if c.isdigit() or c == "+")
            return "sha256:" + hashlib.sha256(digits.encode()).hexdigest()
        return None
    return None


def has_address(profile: dict[str, Any], channel: str) -> bool:
    """Whether ``address`` gives one, without building it (the ads address is a digest:
    a view asks on every evaluation, a send only when it sends)."""
    if channel in ADDRESS_TRAITS:
        return _nonblank(profile.get(ADDRESS_TRAITS[channel])) is not None
    if channel == "ads":
        return _nonblank(profile.get("email")) is not None \
            or _nonblank(profile.get("phone")) is not None
    return False


_PERSONAL = PERSONAL_CHANNELS


def _nonblank(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def view(profile: dict[str, Any], policies: Policies) -> dict[str, Any]:
    """The profile as conditions and templates see it: ``consent`` is the effective
    permission per channel under the policies, ``reachable`` adds having an address that
    has not bounced, ``bounced`` says whether the current address did."""
    # Built once per evaluation (and again after the profile changes): the rules are the
    # functions above, with each map looked up once rather than once per channel.
    v = dict(profile)
    granted, modes = profile.get("consent", {}), policies.consent
    consent = {ch: _permitted(granted.get(ch), modes.get(ch, "opt_in")) for ch in _PERSONAL}
    v["consent"] = consent
    marks = {ch: bounced(profile, ch) for ch in _PERSONAL} if profile.get("bounced") \
        else dict.fromkeys(_PERSONAL, False)
    v["bounced"] = marks
    v["reachable"] = {ch: ok and not marks[ch] and has_address(profile, ch)
                      for ch, ok in consent.items()}
    for key in ("attributes", "counts", "identifiers", "channels"):
        if key not in v:
            v[key] = {}
    chosen = profile.get("subscriptions", {})
    v["subscriptions"] = {topic: _permitted(chosen.get(topic), mode)
                          for topic, (_, mode) in policies.topics.items()}
    return v
