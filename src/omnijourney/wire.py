"""The Avro binary the engine reads for every event and writes for every send, and the
hash that places each keyed record it sends (``murmur2``), compiled (native.py's
``MODULES``).

``codecs.encode_command`` puts a command's single-object header before ``command_body``,
and ``codecs.decode_event`` reads an event's body with ``event_record``; each falls back
to fastavro for anything these cannot take (fastavro then reads or refuses it, as it
always did), and each layout is checked against its schema there
(``codecs._COMMAND_LAYOUT``, ``codecs._EVENT_LAYOUT``). Kept apart from the codecs so that
mypyc compiles these functions alone: interpreted, the command's writer was a tenth of a
herd's tick, and fastavro's reading a tenth of an event's evaluation. No I/O here, only
bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from omnijourney.core.commands import ChannelCommand

try:
    from mypy_extensions import i64  # mypyc's machine integers (murmur2)
except ImportError:  # installed without the dev tools, so never compiled: Python's ints
    i64 = int  # type: ignore[misc]

SHORT_LENGTH = [bytes([n << 1]) for n in range(64)]  # zig-zag varints of 0..63: one byte
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def avro_long(n: int) -> bytes:
    """An Avro long: zig-zag, then a base-128 varint, low bits first."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def command_body(cmd: ChannelCommand, channels: dict[str, bytes]) -> bytes:
    """The Avro binary body of channel_command.avsc, field by field: a string is its UTF-8
    length and bytes, a time its microseconds since the epoch, a nullable string a branch
    index (0 null, 1 string) first, the map one block of entries and an empty block.
    ``channels``: each channel's enum index as written. Each string's two lines are
    written out where it goes (a helper called per string cost more than the bytes)."""
    short = SHORT_LENGTH
    out: list[bytes] = []
    put = out.append
    for text in (cmd.command_id, cmd.journey, cmd.journey_version, cmd.step):
        b = text.encode()
        put(short[len(b)] if len(b) < 64 else avro_long(len(b)))
        put(b)
    put(channels[cmd.channel])
    b = cmd.customer_id.encode()
    put(short[len(b)] if len(b) < 64 else avro_long(len(b)))
    put(b)
    for at in (cmd.send_at, cmd.deadline):
        d = at - EPOCH  # TypeError for a naive time: fastavro's reading of it then
        put(avro_long((d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds))
    for maybe in (cmd.template, cmd.to):
        if maybe is None:
            put(b"\x00")
        else:
            b = maybe.encode()
            put(b"\x02")
            put(short[len(b)] if len(b) < 64 else avro_long(len(b)))
            put(b)
    content = cmd.content
    if content:
        put(short[len(content)] if len(content) < 64 else avro_long(len(content)))
        for key, value in content.items():
            b = key.encode()
            put(short[len(b)] if len(b) < 64 else avro_long(len(b)))
            put(b)
            b = value.encode()
            put(short[len(b)] if len(b) < 64 else avro_long(len(b)))
            put(b)
    put(b"\x00\x01" if cmd.transactional else b"\x00\x00")  # the map's end, the flag
    for text in (cmd.trigger_event_id, cmd.instance_key):
        b = text.encode()
        put(short[len(b)] if len(b) < 64 else avro_long(len(b)))
        put(b)
    if cmd.locale is None:
        put(b"\x00")
    else:
        b = cmd.locale.encode()
        put(b"\x02")
        put(short[len(b)] if len(b) < 64 else avro_long(len(b)))
        put(b)
    return b"".join(out)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The Avro long at ``pos`` (zig-zag, base-128 varint) and the position after it;
    IndexError past the end, ValueError for a varint past a long's 64 bits (fastavro's C
    reader would wrap it: such a body is left to fastavro)."""
    b = data[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        if shift > 63:
            raise ValueError("varint longer than a long")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    if n >> 64:
        raise ValueError("varint longer than a long")
    return (n >> 1) ^ -(n & 1), pos


def _read_text(data: bytes, pos: int) -> tuple[str, int]:
    """The Avro string at ``pos`` (length, then UTF-8, strict) and the position after it."""
    n, pos = _read_long(data, pos)
    end = pos + n
    if n < 0 or end > len(data):
        raise ValueError("string length out of bounds")
    return data[pos:end].decode(), end


def event_record(data: bytes, start: int) -> dict[str, Any]:
    """The record of touchpoint_event.avsc whose body starts at ``start``, as fastavro's
    ``schemaless_reader`` reads it with that schema (its time an aware UTC datetime, bytes
    after the record left unread). Raises on anything else (a truncated body, a union
    index out of range, text that is not UTF-8, a time out of range): the caller lets
    fastavro read it, or refuse it, instead."""
    rec: dict[str, Any] = {}
    pos = start
    rec["event_id"], pos = _read_text(data, pos)
    rec["type"], pos = _read_text(data, pos)
    rec["customer_id"], pos = _read_text(data, pos)
    micros, pos = _read_long(data, pos)
    rec["occurred_at"] = EPOCH + timedelta(microseconds=micros)
    branch, pos = _read_long(data, pos)
    if branch == 0:
        rec["source"] = None
    elif branch == 1:
        rec["source"], pos = _read_text(data, pos)
    else:
        raise ValueError("union index out of range")
    rec["properties"], pos = _read_text(data, pos)
    identifiers: dict[str, str] = {}
    while True:
        count, pos = _read_long(data, pos)
        if count == 0:
            break
        if count < 0:  # a block that gives its size in bytes too
            count = -count
            _, pos = _read_long(data, pos)
        for _ in range(count):
            key, pos = _read_text(data, pos)
            identifiers[key], pos = _read_text(data, pos)
    rec["identifiers"] = identifiers
    return rec


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` (the Java client's ``Utils.murmur2``, aiokafka's
    ``partitioner.murmur2``: the same unsigned 32-bit value), from which the default
    partitioner picks a keyed record's partition. aiokafka's is pure Python, 2.6 us a
    key; every command the engine sends is keyed and placed this way
    (``runtime/produce.py``). In 64-bit machine integers (``i64``) when compiled: a
    32-bit value times the 31-bit multiplier stays below 2**63, and each product is cut
    back to 32 bits at once (0.05 us a key; with Python's ints, compiled, 1.1 us)."""
    m: i64 = 0x5BD1E995
    mask: i64 = 0xFFFFFFFF
    length: i64 = len(data)
    h: i64 = (0x9747B28C ^ length) & mask  # Java's int: every product below 2**63
    end: i64 = length & ~3
    i: i64 = 0
    while i < end:
        k: i64 = (i64(data[i]) | (i64(data[i + 1]) << 8) | (i64(data[i + 2]) << 16)
                  | (i64(data[i + 3]) << 24))
        k = (k * m) & mask
        k = ((k ^ (k >> 24)) * m) & mask
        h = ((h * m) & mask) ^ k
        i += 4
    extra = length & 3
    if extra >= 3:
        h ^= i64(data[end + 2]) << 16
    if extra >= 2:
        h ^= i64(data[end + 1]) << 8
    if extra >= 1:
        h = ((h ^ i64(data[end])) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    return int(h ^ (h >> 15))
