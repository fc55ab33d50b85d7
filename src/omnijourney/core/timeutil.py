"""Durations, local times of day and contact windows.

Everything here takes the moment it reasons about as an argument; nothing reads a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION_PART = re.compile(r"(\d+)(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
DURATION_HINT = "write a duration like 30m, 2h, 7d, 1h30m or 2w"


@lru_cache(maxsize=1024)
def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style durations. Raises ValueError with a hint for marketers."""
    s = str(text).strip().replace(" ", "")
    if not s:
        raise ValueError(f"empty duration; {DURATION_HINT}")
    pos = 0
    seconds = 0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        seconds += int(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"'{text}' is not a duration; {DURATION_HINT}")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    total = int(td.total_seconds())
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def parse_time_of_day(text: str) -> time:
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", str(text).strip())
    if not m:
        raise ValueError(f"'{text}' is not a time of day; write HH:MM, e.g. 09:30")
    return time(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True, slots=True)
class ContactWindow:
    """Local hours in which marketing may reach a customer, e.g. 09:00-21:00.

    A window whose end is before its start wraps midnight (22:00-06:00).
    """

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> ContactWindow:
        parts = str(text).split("-")
        if len(parts) != 2:
            raise ValueError(
                f"'{text}' is not a contact window; write HH:MM-HH:MM, e.g. 09:00-21:00")
        start, end = parse_time_of_day(parts[0]), parse_time_of_day(parts[1])
        if start == end:
            raise ValueError(f"contact window '{text}' is empty; start and end must differ")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_open(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """None if ``at`` is inside the window, else the UTC moment the window next opens."""
        local = at.astimezone(tz)
        if self.contains(local.time().replace(tzinfo=None)):
            return None
        return next_local_time(at, self.start, tz, inclusive=True)


def next_local_time(at: datetime, tod: time, tz: ZoneInfo, *, inclusive: bool = False) -> datetime:
    """The first moment at or after (or strictly after) ``at`` whose local time is ``tod``."""
    local = at.astimezone(tz)
    candidate = _localize(datetime.combine(local.date(), tod), tz)
    if candidate < at or (candidate == at and not inclusive):
        candidate = _localize(datetime.combine(local.date() + timedelta(days=1), tod), tz)
    return candidate.astimezone(UTC)


def _localize(naive: datetime, tz: ZoneInfo) -> datetime:
    # A local time skipped by a DST jump does not exist; round-tripping through UTC
    # moves it to the first real moment after the gap.
    aware = naive.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz)


_TZ_CACHE: dict[str, ZoneInfo | None] = {}


def zone(name: str | None, default: ZoneInfo) -> ZoneInfo:
    """Resolve an IANA zone name; unknown or empty names fall back to ``default``."""
    if not name:
        return default
    if name not in _TZ_CACHE:
        try:
            _TZ_CACHE[name] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            _TZ_CACHE[name] = None
    return _TZ_CACHE[name] or default


def is_known_zone(name: str) -> bool:
    zone(name, ZoneInfo("UTC"))  # fills the cache with the zone, or None if unknown
    return _TZ_CACHE.get(name) is not None


def parse_instant(value: object) -> datetime:
    """An RFC 3339 timestamp with offset (or an aware datetime) as an aware UTC datetime."""
    if type(value) is str and value[-1:] == "Z":
        # What this engine writes (format_instant), a dozen times in every state it reads
        # back: read at once, ten times faster. Python reads a trailing Z as UTC itself;
        # anything it refuses goes the long way, which says what is wrong.
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if dt.tzinfo is UTC:  # else (a Python that reads Z as another zone object):
                return dt  # the long way makes it UTC
    return _parse_instant(value)


def _parse_instant(value: object) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        s = value.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"'{value}' is not an RFC 3339 timestamp") from None
    else:
        raise ValueError(f"expected an RFC 3339 timestamp, got {type(value).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"timestamp '{value}' has no UTC offset; add Z or +HH:MM")
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past datetime's last year in UTC
        raise ValueError(f"timestamp '{value}' is out of range") from None


def instant_text(dt: datetime) -> str:
    """RFC 3339 in UTC with ``Z``; uncached, for instants seen once (an event's time)."""
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    return dt.isoformat().replace("+00:00", "Z")


# Cached: state serialisation formats the same few instants (entries, sends, event times)
# over and over; a datetime hashes in a fraction of isoformat's time.
format_instant = lru_cache(maxsize=65536)(instant_text)
