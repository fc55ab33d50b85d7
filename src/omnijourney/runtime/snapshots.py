"""Snapshot files of a table partition: what a worker held in memory when it stopped, so
that its next start reads only what the changelog got since (runtime/restore.py).

One file per changelog partition, ``<partition>.snap`` in the table's snapshot folder:

- a header line, JSON: format, changelog topic and partition, the highest changelog
  offset whose record the entries reflect, when it was saved, how many entries, how many
  body bytes, the highest fence read on the partition (hex, runtime/restore.py; left out
  when none, and by files saved before there were fences), and a CRC-32C of those fields
  and the body;
- the body: the key and value lengths (unsigned 32-bit, little-endian, interleaved), then
  every key and value, in that order.

A file is written whole to a temporary name and renamed, so a reader sees a whole file or
none. A file that does not read back exactly (a partial write, a flipped bit, another
format) is refused with its reason; the caller then reads the changelog from its start,
as it would with no file.
"""

from __future__ import annotations

import json
import mmap
import os
import sys
from array import array
from dataclasses import dataclass
from itertools import accumulate, pairwise
from pathlib import Path

import crc32c

FORMAT = 1
SUFFIX = ".snap"
MAX_HEADER = 4096
if array("I").itemsize != 4:  # the lengths are written as 32-bit words
    raise ImportError("omnijourney's snapshot files need 4-byte unsigned ints")


class Refused(ValueError):
    """The file is not a snapshot this reader can trust; the message says why."""


@dataclass(frozen=True)
class Header:
    topic: str
    partition: int
    offset: int  # the highest changelog offset the entries reflect (-1: none)
    saved_at: float  # seconds since the epoch
    entries: int
    body: int
    crc: int
    fence: bytes = b""  # the highest fence read on the partition (b"": none)

    def fields(self) -> bytes:
        """Every field but the checksum, as the checksum covers them."""
        doc: dict[str, object] = {
            "format": FORMAT, "topic": self.topic, "partition": self.partition,
            "offset": self.offset, "saved_at": self.saved_at, "entries": self.entries,
            "body": self.body}
        if self.fence:
            doc["fence"] = self.fence.hex()
        return json.dumps(doc, separators=(",", ":")).encode()

    def to_json(self) -> bytes:
        return self.fields()[:-1] + b',"crc32c":' + str(self.crc).encode() + b"}"


def path_of(folder: Path, partition: int) -> Path:
    return folder / f"{partition}{SUFFIX}"


def _lengths(rows: list[tuple[bytes, bytes]]) -> array[int]:
    lengths = array("I")
    for key, value in rows:
        lengths.append(len(key))
        lengths.append(len(value))
    if sys.byteorder != "little":
        lengths.byteswap()
    return lengths


def write(folder: Path, rows: list[tuple[bytes, bytes]], *, topic: str, partition: int,
          offset: int, saved_at: float, fence: bytes = b"") -> int:
    """Write the partition's file (replacing any earlier one); returns its size."""
    folder.mkdir(parents=True, exist_ok=True)
    lengths = _lengths(rows).tobytes()
    data = b"".join([part for row in rows for part in row])
    body = len(lengths) + len(data)
    unsigned = Header(topic, partition, offset, saved_at, len(rows), body, 0, fence)
    crc = crc32c.crc32c(data, crc32c.crc32c(lengths, crc32c.crc32c(unsigned.fields())))
    header = Header(topic, partition, offset, saved_at, len(rows), body, crc,
                    fence).to_json()
    target = path_of(folder, partition)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(header + b"\n")
            out.write(lengths)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return len(header) + 1 + body


def _header(line: bytes) -> Header:
    if not line.endswith(b"\n"):
        raise Refused("no header line")
    try:
        doc = json.loads(line)
        if doc.get("format") != FORMAT:
            raise Refused(f"format {doc.get('format')!r}, this reader knows {FORMAT}")
        header = Header(str(doc["topic"]), int(doc["partition"]), int(doc["offset"]),
                        float(doc["saved_at"]), int(doc["entries"]), int(doc["body"]),
                        int(doc["crc32c"]), bytes.fromhex(str(doc.get("fence", ""))))
    except Refused:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Refused(f"unreadable header: {type(exc).__name__}") from None
    if min(header.entries, header.body, header.offset + 1) < 0:
        raise Refused("negative counts in the header")
    return header


def read(path: Path) -> tuple[Header, list[bytes], list[bytes]]:
    """The header, keys and values of a file, or Refused with the reason. The file is
    mapped, not read: each key and value is copied once, from the page cache."""
    with open(path, "rb") as f:
        line = f.readline(MAX_HEADER)
        header = _header(line)
        size = os.fstat(f.fileno()).st_size
        if size != len(line) + header.body:
            raise Refused(f"body of {size - len(line)} bytes, the header says {header.body}")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        start, n = len(line), header.entries
        with memoryview(mapped) as whole, whole[start:] as body:
            if crc32c.crc32c(body, crc32c.crc32c(header.fields())) != header.crc:
                raise Refused("checksum mismatch")
            if 8 * n > len(body):
                raise Refused("more entries than the body holds")
            lengths = array("I")
            lengths.frombytes(body[:8 * n])
        if sys.byteorder != "little":
            lengths.byteswap()
        ends = list(accumulate(lengths, initial=start + 8 * n))
        if ends[-1] != size:
            raise Refused("lengths do not add up to the body")
        parts = [mapped[a:b] for a, b in pairwise(ends)]
    finally:
        mapped.close()
    return header, parts[0::2], parts[1::2]


def check(header: Header, *, topic: str, partition: int, first: int, end: int, now: float,
          max_age: float) -> None:
    """Refused unless the file is of this changelog partition, its offset still on it
    (``first``: the changelog's first offset, ``end``: the offset its next record gets),
    and it was saved less than ``max_age`` seconds ago."""
    if (header.topic, header.partition) != (topic, partition):
        raise Refused(f"of {header.topic}[{header.partition}], not {topic}[{partition}]")
    if header.offset >= end:
        raise Refused(f"offset {header.offset} is past the changelog's end ({end}): "
                      f"a changelog made anew")
    if header.offset + 1 < first:
        raise Refused(f"records {header.offset + 1} to {first - 1} are gone from the changelog")
    age = now - header.saved_at
    if not 0 <= age < max_age:
        raise Refused(f"saved {age:.0f} s ago; at most {max_age:.0f} s is safe")


def half_retention(responses: list[object], topic: str) -> float:
    """Half the topic's ``delete.retention.ms``, in seconds, from describe-configs
    responses; ValueError if they do not say."""
    for response in responses:
        for resource in getattr(response, "resources", ()):
            error, _, _, name, entries = resource[:5]
            if name != topic:
                continue
            if error:
                raise ValueError(f"describe configs of {topic}: error {error}")
            for entry in entries:
                if entry[0] == "delete.retention.ms":
                    return int(entry[1]) / 2000
    raise ValueError(f"no delete.retention.ms for {topic}")
