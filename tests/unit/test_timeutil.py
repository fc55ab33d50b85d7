from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnijourney.core.timeutil import (
    ContactWindow,
    _parse_instant,
    format_duration,
    format_instant,
    next_local_time,
    parse_duration,
    parse_instant,
    parse_time_of_day,
)
from tests.helpers import t

BERLIN = ZoneInfo("Europe/Berlin")
NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
    ("1h30m", timedelta(hours=1, minutes=30)), ("2w", timedelta(weeks=2)), ("45s", timedelta(seconds=45)),
    ("0s", timedelta(0)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "2 hours", "h2", "1.5h", "1y", "10", "-1h", "2hx"])
def test_bad_durations_say_how_to_write_one(bad: str) -> None:
    with pytest.raises(ValueError, match="duration like 30m"):
        parse_duration(bad)


def test_format_duration_round_trips() -> None:
    for text in ("1d14h45m", "2h", "30d", "45s"):
        assert format_duration(parse_duration(text)) == text


def test_time_of_day() -> None:
    assert parse_time_of_day("9:05").hour == 9
    with pytest.raises(ValueError, match="HH:MM"):
        parse_time_of_day("25:00")


def test_window_inside_and_outside() -> None:
    w = ContactWindow.parse("09:00-21:00")
    assert w.next_open(t("2026-03-02T12:00:00Z"), ZoneInfo("UTC")) is None
    assert w.next_open(t("2026-03-02T21:00:00Z"), ZoneInfo("UTC")) == t("2026-03-03T09:00:00Z")
    assert w.next_open(t("2026-03-02T03:00:00Z"), ZoneInfo("UTC")) == t("2026-03-02T09:00:00Z")
    # 20:30 in New York is inside; 22:30 is not and opens at 09:00 local (14:00Z in EST).
    assert w.next_open(t("2026-03-03T01:30:00Z"), NY) is None
    assert w.next_open(t("2026-03-03T03:30:00Z"), NY) == t("2026-03-03T14:00:00Z")


def test_window_wrapping_midnight() -> None:
    w = ContactWindow.parse("22:00-06:00")
    utc = ZoneInfo("UTC")
    assert w.next_open(t("2026-03-02T23:00:00Z"), utc) is None
    assert w.next_open(t("2026-03-02T05:59:00Z"), utc) is None
    assert w.next_open(t("2026-03-02T12:00:00Z"), utc) == t("2026-03-02T22:00:00Z")


def test_window_across_dst_change() -> None:
    # Berlin springs forward on 2026-03-29: 09:00 local is 08:00Z before, 07:00Z after.
    w = ContactWindow.parse("09:00-21:00")
    assert w.next_open(t("2026-03-28T22:00:00Z"), BERLIN) == t("2026-03-29T07:00:00Z")
    assert w.next_open(t("2026-03-27T22:00:00Z"), BERLIN) == t("2026-03-28T08:00:00Z")


def test_local_time_skipped_by_dst_moves_past_the_gap() -> None:
    from datetime import time
    got = next_local_time(t("2026-03-29T00:00:00Z"), time(2, 30), BERLIN)
    assert got.astimezone(BERLIN).hour == 3  # 02:30 does not exist that night


@pytest.mark.parametrize("bad", ["2026-03-02T10:00:00", "yesterday", 5])
def test_instants_need_an_offset(bad: object) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|offset"):
        parse_instant(bad)


def test_instant_offsets_normalise_to_utc() -> None:
    assert parse_instant("2026-03-02T11:00:00+01:00") == t("2026-03-02T10:00:00Z")


_INSTANT_CHARS = "0123456789-:T.+ Zz,W"


@settings(max_examples=1500, deadline=None)
@given(st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(format_instant),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.text(alphabet=_INSTANT_CHARS, max_size=32).map(lambda s: s + "Z"),
    st.text(alphabet=_INSTANT_CHARS, max_size=32),
    st.datetimes(timezones=st.sampled_from([ZoneInfo("Europe/Berlin"), None])).map(
        lambda d: d.isoformat()),
    st.sampled_from(["2026-03-02Z", "2026-03-02T10Z", "2026-03-02T10:00Z", "20260302T100000Z",
                     "2026-W10-1T10:00:00Z", "2026-03-02T10:00:00.1Z", " 2026-03-02T10:00:00Z",
                     "2026-03-02T10:00:00+01:00Z", "2026-03-02 10:00:00Z", "Z", "",
                     "2026-03-02T24:00:00Z", "2026-03-02T10:00:00,5Z"])))
def test_the_quick_read_of_a_utc_instant_is_the_long_one(text: str) -> None:
    """``parse_instant`` reads what ends in Z at once; whatever the text (Z or another
    offset or none), the instant (or the refusal) is the one the full reading gives."""
    def read(f: Callable[[object], datetime]) -> tuple[datetime | None, str | None]:
        try:
            return f(text), None
        except ValueError as exc:
            return None, type(exc).__name__
    quick, full = read(parse_instant), read(_parse_instant)
    assert quick == full
    if quick[0] is not None:
        assert quick[0].tzinfo is UTC
