"""Protobuf wire format by hand where a message costs more than its bytes: batch items, ids."""

from __future__ import annotations

_LEN = 2  # wire type of strings, bytes and embedded messages


def varint(value: int) -> bytes:
    """`value` (not negative) as a base-128 varint."""
    if value < _KNOWN:
        return _VARINTS[value]
    return _encode_varint(value)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Tags and the lengths of most fields: looked up rather than encoded each time.
_KNOWN = 4096
_VARINTS = tuple(_encode_varint(n) for n in range(_KNOWN))


def field(number: int, data: bytes) -> bytes:
    """A length-delimited field: appended to an encoded message it sets (or, if repeated,
    adds to) field `number`, as parsing concatenated encodings merges them."""
    return varint(number << 3 | _LEN) + varint(len(data)) + data


def string_field(number: int, text: str) -> bytes:
    """A string field, or nothing for "" (proto3 leaves defaults out)."""
    return field(number, text.encode("utf-8")) if text else b""


def _read_varint(raw: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated or overlong varint")


def repeated_messages(raw: bytes, number: int) -> list[bytes] | None:
    """The encoded values of field `number` (length-delimited) in the message `raw`, in order,
    or None when the top level is not plainly well formed (the caller then parses it whole):
    a truncated field, a group, field number 0, or `number` with another wire type."""
    out: list[bytes] = []
    pos, end = 0, len(raw)
    try:
        while pos < end:
            tag, pos = _read_varint(raw, pos, end)
            kind, num = tag & 7, tag >> 3
            if num == 0:
                return None
            if kind == _LEN:
                size, pos = _read_varint(raw, pos, end)
                stop = pos + size
                if stop > end:
                    return None
                if num == number:
                    out.append(raw[pos:stop])
                pos = stop
            elif num == number:
                return None
            elif kind == 0:
                _, pos = _read_varint(raw, pos, end)
            elif kind == 1:
                pos += 8
            elif kind == 5:
                pos += 4
            else:
                return None
    except ValueError:
        return None
    return out if pos == end else None
