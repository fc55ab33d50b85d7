"""The Avro binary the engine writes for every send, compiled (native.py's ``MODULES``).

``codecs.encode_command`` puts a command's single-object header before ``command_body``
and falls back to fastavro for anything this writer cannot take; the layout it writes is
checked against the schema there (``codecs._COMMAND_LAYOUT``). Kept apart from the codecs
so that mypyc compiles these two functions alone: interpreted, they were a tenth of a
herd's tick. No I/O here, only bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from omnijourney.core.commands import ChannelCommand

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
