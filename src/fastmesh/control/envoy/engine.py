"""The table-driven translation engine: Envoy messages in, fastmesh's native config out.

Every Envoy message fastmesh reads has a ``Table``: one ``Row`` per field it
knows, saying what the field becomes (a native key, a nested table, a custom
handler), or that it is ignored (with a note) or refused ("not supported
yet"). A field with no row is refused too, naming the exact path. The same
tables generate docs/envoy-compat.md (``tables.py``), and the tests check
that every row is exercised by a fixture, so the doc cannot claim more than
the translator does.

A ``Tx`` carries one translation: the errors and warnings found, and the
map from every native key path written to the Envoy path it came from, so
that native validation errors are reported at the Envoy field and line.
"""
from __future__ import annotations

import base64
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastmesh.control.loader import ConfigError, Path, _Ctx, _format_path, _kind

Handler = Callable[["Tx", Path, Path, Any, dict], None]

SUPPORTED, IGNORED, WARNED, REJECTED = "supported", "ignored", "ignored with a warning", "rejected"


class Bad(Exception):
    """A value a converter refuses; the engine reports it at the field's path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Row:
    """One Envoy field: what it becomes in fastmesh's config and which test covers it."""

    field: str
    target: str                       # the native key written ("" when none)
    handler: Handler | None           # None for ignored and rejected fields
    note: str
    test: str                         # the test in tests/test_envoy_config.py covering it
    status: str = SUPPORTED


@dataclass
class Table:
    """The fields fastmesh reads of one Envoy message (``message``: its proto name)."""

    message: str
    rows: tuple[Row, ...]
    type_url: str | None = None       # checked when the mapping carries '@type'
    by_field: dict[str, Row] = field(init=False, repr=False)
    module: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_field = {r.field: r for r in self.rows}
        # The defining module (the doc groups tables by it).
        self.module = sys._getframe(2).f_globals.get("__name__", "").rsplit(".", 1)[-1]
        TABLES.append(self)

    def row_id(self, name: str) -> str:
        return f"{self.message}.{name}"


TABLES: list[Table] = []    # every table, in definition order (the doc's order)
_RECORDERS: list[set[str]] = []


@contextmanager
def recording(into: set[str]) -> Iterator[set[str]]:
    """Collect into ``into`` the id of every row applied meanwhile, by any translation
    (the test that every row is exercised by a fixture)."""
    _RECORDERS.append(into)
    try:
        yield into
    finally:
        _RECORDERS.remove(into)


# ---------------------------------------------------------------- row makers

def copy(name: str, target: str, conv: Callable[[Any], Any], note: str, test: str) -> Row:
    """The field's value, converted, becomes native ``target``."""
    def handler(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
        try:
            tx.set(out, npath, target, conv(value), epath)
        except Bad as exc:
            tx.error(epath, exc.reason)
    return Row(name, target, handler, note, test)


def sub(name: str, target: str, table: Callable[[], Table], note: str, test: str) -> Row:
    """A nested message translated by its own table into native mapping ``target``."""
    def handler(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
        inner: dict = {}
        tx.set(out, npath, target, inner, epath)
        tx.walk(table(), epath, npath + (target,), value, inner)
    return Row(name, target, handler, note, test)


def custom(name: str, target: str, handler: Handler, note: str, test: str) -> Row:
    return Row(name, target, handler, note, test)


def ignore(name: str, note: str, test: str, *, warn: bool = False) -> Row:
    """Accepted and ignored (with a logged warning when ``warn``)."""
    def handler(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
        if warn:
            tx.warn(epath, f"ignored: {note}")
    return Row(name, "", handler, note, test, WARNED if warn else IGNORED)


def reject(name: str, note: str, test: str) -> Row:
    """Refused: "not supported yet" with the reason."""
    return Row(name, "", None, note, test, REJECTED)


# ---------------------------------------------------------------- converters

_DURATION_RE = re.compile(r"-?[0-9]+(\.[0-9]{1,9})?s")
_UINT32 = (1 << 32) - 1


def duration(value: Any) -> float:
    """Envoy's Duration: ``"1.5s"`` (proto3 JSON) or ``{seconds, nanos}``; float seconds."""
    if isinstance(value, str):
        if not _DURATION_RE.fullmatch(value):
            raise Bad(f"invalid duration {value!r}; Envoy writes durations in seconds "
                      "with an 's' suffix (\"1.5s\", \"0.250s\") or as {seconds, nanos}")
        seconds = float(value[:-1])
    elif isinstance(value, Mapping):
        extra = set(value) - {"seconds", "nanos"}
        if extra:
            raise Bad(f"invalid duration: unknown field {sorted(extra)[0]!r}; "
                      "expected {seconds, nanos}")
        secs, nanos = value.get("seconds", 0), value.get("nanos", 0)
        if isinstance(secs, str) and re.fullmatch(r"-?[0-9]+", secs):
            secs = int(secs)   # int64 is a string in proto3 JSON
        for part, v in (("seconds", secs), ("nanos", nanos)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise Bad(f"invalid duration: {part} must be an integer, got {_kind(v)}")
        if not -999_999_999 <= nanos <= 999_999_999:
            raise Bad("invalid duration: nanos must be between -999999999 and 999999999")
        seconds = secs + nanos / 1e9
    else:
        raise Bad(f"expected a duration (\"1.5s\" or {{seconds, nanos}}), got {_kind(value)}")
    if seconds < 0:
        raise Bad("a negative duration is not allowed")
    return seconds


def wrapped(value: Any) -> Any:
    """A wrapper message (UInt32Value, BoolValue, ...): ``{value: X}`` or the bare X."""
    if isinstance(value, Mapping):
        if set(value) != {"value"}:
            raise Bad("expected a wrapper value: {value: X} or X")
        return value["value"]
    return value


def uint32(value: Any) -> int:
    """UInt32Value or uint32: ``N`` or ``{value: N}``."""
    value = wrapped(value)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(f"expected an unsigned 32-bit integer, got {_kind(value)}")
    if not 0 <= value <= _UINT32:
        raise Bad(f"{value} is out of range for a uint32")
    return value


def boolean(value: Any) -> bool:
    """BoolValue or bool: ``true`` or ``{value: true}``."""
    value = wrapped(value)
    if not isinstance(value, bool):
        raise Bad(f"expected true or false, got {_kind(value)}")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise Bad(f"expected a string, got {_kind(value)}")
    return value


def enum(choices: Mapping[str, Any]) -> Callable[[Any], Any]:
    """An Envoy enum by name (or number, as proto3 JSON allows), mapped to its native value."""
    names = list(choices)

    def conv(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            value = names[value]
        if not isinstance(value, str) or value not in choices:
            raise Bad(f"invalid value {value!r}; supported: {', '.join(names)}")
        return choices[value]
    return conv


def data_source(value: Any) -> str:
    """Envoy's DataSource: ``inline_string``, ``inline_bytes`` (base64) or ``filename``."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise Bad("expected a DataSource with exactly one of: inline_string, inline_bytes, "
                  "filename")
    (key, v), = value.items()
    if key == "inline_string":
        return string(v)
    if key == "inline_bytes":
        try:
            return base64.b64decode(string(v), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise Bad("inline_bytes must be base64 of UTF-8 text") from None
    if key == "filename":
        try:
            with open(string(v), encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise Bad(f"cannot read {v!r}: {exc.strerror or exc}") from None
    raise Bad(f"unknown DataSource field {key!r}; expected inline_string, inline_bytes or "
              "filename")


def type_name(url: Any) -> str:
    """The message name of an Any's ``@type`` URL (what follows the last '/')."""
    if not isinstance(url, str) or "/" not in url:
        raise Bad(f"invalid @type {url!r}; expected type.googleapis.com/<message>")
    return url.rsplit("/", 1)[1]


def normalize(value: Any, *, durations: frozenset[str] = frozenset(),
              wrappers: frozenset[str] = frozenset(), ints: frozenset[str] = frozenset()) -> Any:
    """A copy of a message for native validation: fields named in ``durations``
    become float seconds, those in ``wrappers`` lose their ``{value: X}`` and
    those in ``ints`` (64-bit integers, strings in proto3 JSON) become ints;
    '@type' is dropped (checked by the caller). Bad values are left as they are,
    for the native check to refuse with its own reason."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if k == "@type":
                continue
            try:
                if k in durations:
                    v = duration(v)
                elif k in wrappers:
                    v = wrapped(v)
                if k in ints and isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v):
                    v = int(v)
            except Bad:
                pass
            out[k] = normalize(v, durations=durations, wrappers=wrappers, ints=ints)
        return out
    if isinstance(value, list):
        return [normalize(v, durations=durations, wrappers=wrappers, ints=ints) for v in value]
    return value


# ---------------------------------------------------------------- one translation

class Tx:
    """One translation: errors, warnings, native-to-Envoy path map, rows used."""

    def __init__(self, file: str | None, lines: _Ctx | None = None) -> None:
        self.file = file
        self.lines = lines
        self.errors: list[ConfigError] = []
        self.warnings: list[str] = []
        self.paths: dict[Path, Path] = {}   # native path -> Envoy path
        self.used: set[str] = set()         # row ids applied (the coverage test reads them)
        self.secrets: dict[str, Any] = {}   # SDS secrets by name (static_resources or xDS)
        self.filter_names: dict[str, str | None] = {}  # this listener's http filters: Envoy
        #                                     name -> native built-in name (None: skipped)
        self.zero_weight_refs: list[tuple[Path, Any]] = []   # clusters named with weight 0
        self.cluster_refs: list[tuple[Path, Any]] = []       # other cluster names to check
        self.route_configs: dict[str, Any] | None = None     # RDS resources, when given
        self.ads_eds: list[tuple[Any, Path]] = []            # EDS clusters the xDS client feeds
        self.rds: list[tuple[str, str]] = []                 # (listener, route config) waiting

    # -- reporting
    def line(self, epath: Path, key: bool = False) -> int | None:
        return self.lines.line(epath, key=key) if self.lines is not None else None

    def error(self, epath: Path, reason: str, *, key: bool = False) -> None:
        self.errors.append(ConfigError(self.file, self.line(epath, key), _format_path(epath),
                                       reason))

    def warn(self, epath: Path, reason: str) -> None:
        where = f"{self.file}:{self.line(epath)}: " if self.file and self.line(epath) else (
            f"{self.file}: " if self.file else "")
        self.warnings.append(f"{where}{_format_path(epath)}: {reason}")

    def raise_if_errors(self) -> None:
        if not self.errors:
            return
        ordered = sorted(self.errors, key=lambda e: e.line if e.line is not None else 1 << 60)
        ordered[0].errors = ordered
        raise ordered[0]

    # -- paths
    def set(self, out: dict, npath: Path, key: str, value: Any, epath: Path) -> None:
        out[key] = value
        self.paths[npath + (key,)] = epath

    def envoy_path(self, npath: Path) -> Path:
        """The Envoy path of a native path: its longest mapped prefix, plus the rest
        (native and Envoy names agree below a mapped point)."""
        for n in range(len(npath), -1, -1):
            hit = self.paths.get(npath[:n])
            if hit is not None:
                return hit + npath[n:]
        return npath

    # -- the walk
    def walk(self, table: Table, epath: Path, npath: Path, value: Any, out: dict) -> bool:
        """Apply ``table`` to the mapping ``value`` (at Envoy path ``epath``), writing
        native keys into ``out`` (at native path ``npath``). False if it is not a mapping."""
        if not isinstance(value, Mapping):
            self.error(epath, f"expected {table.message} (a mapping), got {_kind(value)}")
            return False
        self.paths.setdefault(npath, epath)
        for key, item in value.items():
            path = epath + (key,)
            if key == "@type":
                self.check_type(table, path, item)
                continue
            row = table.by_field.get(key)
            if row is None:
                self.error(path, f"field {key!r} of {table.message} is not supported by "
                           f"fastmesh{_suggest(key, table)}", key=True)
                continue
            self.use(table.row_id(key))
            if row.handler is None:
                self.error(path, f"not supported yet: {row.note}", key=True)
                continue
            row.handler(self, path, npath, item, out)
        return True

    def use(self, row_id: str) -> None:
        self.used.add(row_id)
        for r in _RECORDERS:
            r.add(row_id)

    def check_type(self, table: Table, path: Path, url: Any) -> None:
        if table.type_url is None:
            self.error(path, f"{table.message} takes no '@type'", key=True)
            return
        try:
            name = type_name(url)
        except Bad as exc:
            self.error(path, exc.reason)
            return
        if name != table.type_url:
            self.error(path, f"@type {name!r} where {table.type_url!r} was expected")


def _suggest(key: str, table: Table) -> str:
    import difflib

    supported = [r.field for r in table.rows if r.status != REJECTED]
    close = difflib.get_close_matches(key, supported, n=1, cutoff=0.75)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (fastmesh reads: {', '.join(supported)})" if supported else ""
