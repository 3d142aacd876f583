"""Durations and byte sizes as written in fastmesh config files.

A duration is a number of seconds (``15``, ``0.25``) or a string of one or
more ``<number><unit>`` parts with units ``us``, ``ms``, ``s``, ``m``, ``h``
(``"200us"``, ``"250ms"``, ``"1.5s"``, ``"1h30m"``); it becomes float seconds.

A size is a whole number of bytes (``65536``) or a string with a binary
unit: ``k``/``K``/``KiB``/``KB`` = 1024, ``m``/``M``/``MiB``/``MB`` = 1024**2,
``g``/``G``/``GiB``/``GB`` = 1024**3 (``"64KiB"``, ``"1MiB"``, ``"16k"``); it
becomes int bytes. Every unit is binary: buffer limits are about memory,
where "1M" meaning 1,000,000 would surprise more than it helps.

The parsers raise ``ValueError`` with a message meant for a config error; the
config loader adds the file, line and key path. Arithmetic is done in
``Decimal`` so that ``"1.1ms"`` is the float nearest to 0.0011, not 0.0011000000000000001.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["parse_duration", "format_duration", "parse_size", "format_size"]

_DURATION_UNITS: dict[str, Decimal] = {
    "us": Decimal("0.000001"),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
# "ms" and "us" before "m" and "s" so that "250ms" is not read as 250 minutes
# followed by "s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|h|m|s)")
_DURATION_FULL = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:us|ms|h|m|s))+")

_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def parse_duration(value: object) -> float:
    """Return ``value`` (number of seconds or a duration string) as float seconds.

    Raises ``ValueError`` for other types, a malformed string, a negative,
    infinite or NaN value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(
            f"expected a duration (seconds as a number, or a string like '250ms', '15s', "
            f"'5m', '1h'), got {_type_name(value)}"
        )
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"duration must be finite, got {value!r}")
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value!r}")
        return float(value)
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"duration must not be negative, got {value!r}")
    if not _DURATION_FULL.fullmatch(text):
        hint = " (missing unit: us, ms, s, m or h)" if _is_number(text) else ""
        raise ValueError(
            f"invalid duration {value!r}{hint}; expected a number of seconds or a string "
            "like '250ms', '1.5s', '5m', '1h', '1h30m'"
        )
    total = sum(
        (Decimal(num) * _DURATION_UNITS[unit] for num, unit in _DURATION_PART.findall(text)),
        Decimal(0),
    )
    result = float(total)
    if not math.isfinite(result):
        raise ValueError(f"duration {value!r} is too large")
    return result


def format_duration(seconds: float) -> str:
    """Format seconds as the shortest natural duration string that parses back exactly.

    ``format_duration(3600) == "1h"``, ``format_duration(0.25) == "250ms"``,
    ``parse_duration(format_duration(x)) == x`` for every finite ``x >= 0``.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError("seconds must be a number")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration")
    exact = Decimal(repr(float(seconds)))
    for unit in ("h", "m", "s", "ms", "us"):
        count = exact / _DURATION_UNITS[unit]
        if count == count.to_integral_value():
            candidate = f"{int(count)}{unit}"
            if parse_duration(candidate) == seconds:
                return candidate
    return f"{exact:f}s"  # plain decimal notation: the parser takes no exponents


def parse_size(value: object) -> int:
    """Return ``value`` (int bytes or a string like ``"64KiB"``) as int bytes.

    Raises ``ValueError`` for other types, malformed strings, unknown units,
    negative values and sizes that are not a whole number of bytes.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(
            f"expected a size (bytes as an integer, or a string like '16k', '64KiB', '1MiB'), "
            f"got {_type_name(value)}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"size must not be negative, got {value!r}")
    match = _SIZE_RE.fullmatch(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(
            f"invalid size {value!r}; expected bytes as an integer or a string like "
            "'16k', '64KiB', '1MiB', '1M' (units k/KiB, M/MiB, G/GiB, all binary)"
        )
    try:
        amount = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"invalid size {value!r}") from None
    if amount != amount.to_integral_value():
        raise ValueError(f"size {value!r} is not a whole number of bytes")
    return int(amount)


def format_size(nbytes: int) -> str:
    """Format bytes with the largest binary unit that divides it (``1048576 -> "1MiB"``)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"cannot format {nbytes!r} as a size")
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes and nbytes % mult == 0:
            return f"{nbytes // mult}{unit}"
    return str(nbytes)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
