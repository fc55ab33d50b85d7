"""Snapshot files (runtime/snapshots.py): what is written reads back exactly, and a file
that is damaged, of another partition or changelog, or too old is refused with a reason,
never half-read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnijourney.runtime import snapshots
from omnijourney.runtime.snapshots import Refused

TOPIC = "app-customer-state-changelog"


def rows_of(entries: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return list(entries.items())


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=40), st.binary(max_size=300),
                        max_size=40),
       st.integers(min_value=-1, max_value=2**40))
def test_what_is_written_reads_back_exactly(tmp_path_factory: pytest.TempPathFactory,
                                            entries: dict[bytes, bytes], offset: int) -> None:
    folder = tmp_path_factory.mktemp("snap")
    size = snapshots.write(folder, rows_of(entries), topic=TOPIC, partition=3, offset=offset,
                           saved_at=1_000.5)
    path = snapshots.path_of(folder, 3)
    assert path.stat().st_size == size
    header, keys, values = snapshots.read(path)
    assert (header.topic, header.partition, header.offset, header.saved_at) == (
        TOPIC, 3, offset, 1_000.5)
    assert dict(zip(keys, values, strict=True)) == entries
    assert [p.name for p in folder.iterdir()] == ["3.snap"]  # no temporary file left


def written(tmp_path: Path) -> Path:
    snapshots.write(tmp_path, [(b"c1", b'{"p":0}'), (b"c2", b"x" * 500), (b"c3", b"")],
                    topic=TOPIC, partition=0, offset=41, saved_at=1_000.0)
    return snapshots.path_of(tmp_path, 0)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_a_flipped_byte_anywhere_or_a_cut_is_refused(tmp_path_factory: pytest.TempPathFactory,
                                                    data: st.DataObject) -> None:
    path = written(tmp_path_factory.mktemp("snap"))
    raw = bytearray(path.read_bytes())
    if data.draw(st.booleans(), label="cut"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="keep")]
    else:
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] ^= data.draw(st.integers(1, 255), label="bits")
    path.write_bytes(bytes(raw))
    with pytest.raises(Refused):  # the checksum covers the header's fields too
        snapshots.read(path)


@pytest.mark.parametrize("text", [
    b"", b"not json\n", b'{"format":2}\n', b"[]\n",
    b'{"format":1,"topic":"t","partition":0,"offset":-2,"saved_at":1,"entries":0,'
    b'"body":0,"crc32c":0}\n',
    b'{"format":1,"topic":"t","partition":0,"offset":1,"saved_at":1,"entries":1,'
    b'"body":0,"crc32c":0}\n',
    b'{"format":1,"topic":"t","partition":0,"offset":1,"saved_at":1,"entries":5,'
    b'"body":8,"crc32c":0}\n' + b"\0" * 8,
])
def test_a_file_that_is_not_a_snapshot_is_refused_with_a_reason(tmp_path: Path,
                                                                 text: bytes) -> None:
    path = tmp_path / "0.snap"
    path.write_bytes(text)
    with pytest.raises(Refused) as refused:
        snapshots.read(path)
    assert str(refused.value)


def test_only_a_file_of_this_partition_still_on_the_changelog_and_young_enough_is_used(
        tmp_path: Path) -> None:
    header, _, _ = snapshots.read(written(tmp_path))  # offset 41, saved at 1,000 s
    ok: dict[str, object] = {"topic": TOPIC, "partition": 0, "first": 0, "end": 42, "now": 1_010.0,
          "max_age": 60.0}

    def check(**changes: object) -> None:
        args = {**ok, **changes}
        snapshots.check(header, **args)  # type: ignore[arg-type]

    check()
    check(first=42, end=50)  # everything up to 41 compacted or read: nothing is missing
    for changes, reason in [
            ({"topic": "other-changelog"}, "not other-changelog"),
            ({"partition": 1}, "not " + TOPIC + "[1]"),
            ({"end": 41}, "past the changelog's end"),  # a changelog made anew
            ({"first": 43, "end": 50}, "records 42 to 42 are gone"),
            ({"now": 1_060.0}, "at most 60 s"),  # tombstones since may be compacted away
            ({"now": 990.0}, "saved -10 s ago")]:  # a clock that went back: not trusted
        with pytest.raises(Refused, match=re.escape(reason)):
            check(**changes)


def test_half_the_changelogs_delete_retention_is_the_longest_a_file_is_trusted() -> None:
    class Response:
        resources = ((0, "", 2, "other", [("delete.retention.ms", "10", False, 1, False)]),
                     (0, "", 2, TOPIC, [("delete.retention.ms", "86400000", False, 1, False)]))

    assert snapshots.half_retention([Response()], TOPIC) == 43_200.0

    class Failed:
        resources = ((3, "unknown topic", 2, TOPIC, []),)

    for responses, topic, reason in (([Failed()], TOPIC, "error 3"), ([], TOPIC, "no delete"),
                                     ([Response()], "missing", "no delete")):
        with pytest.raises(ValueError, match=reason):
            snapshots.half_retention(responses, topic)
