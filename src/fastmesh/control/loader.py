"""Reading config text: YAML composed into plain data with the line of every key.

The YAML is composed into nodes (``yaml.SafeLoader``) so every key and value
keeps its line; ``_Ctx`` records those lines by key path and collects the
``ConfigError``s of one parse, each reading ``file:line: path: reason``.
Size and depth limits refuse alias bombs and recursive anchors. What the
data means is checked afterwards, by ``validation``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


class ConfigError(Exception):
    """A config file that does not follow the schema.

    ``file`` is the path or source name (or None), ``line`` the 1-based line
    of the offending key or value (None for dict input), ``path`` the key
    path (``"clusters[0].endpoints[1].port"``, "" for the whole document) and
    ``reason`` what is wrong. ``errors`` lists every problem found in the
    same pass, this one first.

    The arguments come in the order of the message:
    ``ConfigError(file, line, path, reason)``; all may be given by keyword.
    """

    def __init__(
        self,
        file: str | None = None,
        line: int | None = None,
        path: str | None = "",
        reason: str = "invalid config",
    ) -> None:
        self.file = file
        self.line = line
        self.path = path or ""
        self.reason = reason
        self.errors: list[ConfigError] = [self]
        super().__init__(file, line, self.path, reason)   # args as given: picklable

    def _format(self) -> str:
        where = ""
        if self.file is not None and self.line is not None:
            where = f"{self.file}:{self.line}: "
        elif self.file is not None:
            where = f"{self.file}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        return f"{where}{self.path + ': ' if self.path else ''}{self.reason}"

    def __str__(self) -> str:
        return self._format()


Path = tuple[str | int, ...]

# Guards against alias bombs ("billion laughs") and recursive anchors: a real
# config has a few hundred nodes and a depth under 10.
_MAX_NODES = 200_000
_MAX_DEPTH = 64


def _format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _Ctx:
    """Collects errors and maps key paths to source lines during one parse."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.value_lines: dict[Path, int] = {}   # path -> line where its value starts
        self.key_lines: dict[Path, int] = {}     # path -> line of its key
        self.errors: list[ConfigError] = []
        self.cluster_refs: list[tuple[Path, str]] = []
        self.nodes = 0
        # An xDS-fed config may hold no listener yet (control/xds): 0 there.
        self.min_listeners = 1

    def line(self, path: Path, *, key: bool = False) -> int | None:
        if key and path in self.key_lines:
            return self.key_lines[path]
        while True:
            if path in self.value_lines:
                return self.value_lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path, reason: str, *, key: bool = False, line: int | None = None) -> None:
        if line is None:
            line = self.line(path, key=key)
        self.errors.append(ConfigError(self.source, line, _format_path(path), reason))

    def raise_if_errors(self) -> None:
        if not self.errors:
            return
        # File order; errors without a line (dict input) keep their discovery order.
        ordered = sorted(self.errors, key=lambda e: e.line if e.line is not None else 1 << 60)
        first = ordered[0]
        first.errors = ordered
        raise first


def _compose(ctx: _Ctx, data: str | bytes) -> Any:
    """Parse YAML into plain Python data, recording the line of every key and value."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            ctx.error((), f"config is not valid UTF-8: {exc.reason} at byte {exc.start}",
                      line=data.count(b"\n", 0, exc.start) + 1)
            return None
    try:
        loader = yaml.SafeLoader(data)
    except yaml.reader.ReaderError as exc:   # a control character near the start
        _reader_error(ctx, data, exc)
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            ctx.error((), "config is empty; expected a mapping with at least 'listeners'", line=1)
            return None
        return _node_to_py(ctx, loader, node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = "invalid YAML: " + ": ".join(
            part for part in (exc.context, exc.problem) if part
        )
        ctx.error((), reason, line=mark.line + 1 if mark else None)
        return None
    except yaml.reader.ReaderError as exc:   # a control character; it has no mark
        _reader_error(ctx, data, exc)
        return None
    except _TooBig as exc:
        ctx.error((), str(exc), line=exc.line)
        return None
    finally:
        loader.dispose()


def _reader_error(ctx: _Ctx, text: str, exc: yaml.reader.ReaderError) -> None:
    char = exc.character if isinstance(exc.character, int) else ord(exc.character)
    ctx.error((), f"invalid YAML: unacceptable character #x{char:04x}: {exc.reason}",
              line=text.count("\n", 0, exc.position) + 1)


class _TooBig(Exception):
    def __init__(self, reason: str, line: int) -> None:
        super().__init__(reason)
        self.line = line


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _mapping_entries(ctx: _Ctx, loader: yaml.SafeLoader, node: MappingNode, path: Path,
                     depth: int = 0) -> dict[str, tuple[Node, Node]]:
    """The key -> (key node, value node) pairs of a mapping, with ``<<`` merge keys resolved.

    YAML merge semantics: the mapping's own keys win over merged ones, and an
    earlier merge source wins over a later one. Errors inside merge sources are
    reported where the source itself is visited, not once per use.
    """
    if depth > _MAX_DEPTH:
        raise _TooBig("YAML merge keys nest too deeply (recursive alias?)",
                      node.start_mark.line + 1)
    report = depth == 0
    own: dict[str, tuple[Node, Node]] = {}
    merged: dict[str, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    if report:
                        ctx.error(path, "a '<<' merge key needs a mapping or a list of mappings",
                                  line=key_line)
                    continue
                for key, pair in _mapping_entries(ctx, loader, source, path, depth + 1).items():
                    merged.setdefault(key, pair)
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            if report:
                ctx.error(path, f"keys must be strings, got {_kind(key)}", line=key_line)
            continue
        if key in own:
            if report:
                ctx.error(path + (key,), f"duplicate key {key!r}", line=key_line)
            continue
        own[key] = (key_node, value_node)
    for key in own:
        merged.pop(key, None)
    return {**merged, **own}


def _node_to_py(ctx: _Ctx, loader: yaml.SafeLoader, node: Node, path: Path) -> Any:
    line = node.start_mark.line + 1
    ctx.nodes += 1
    if ctx.nodes > _MAX_NODES or len(path) > _MAX_DEPTH:
        raise _TooBig("config is too large or too deeply nested (recursive YAML alias?)", line)
    ctx.value_lines.setdefault(path, line)
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key, (key_node, value_node) in _mapping_entries(ctx, loader, node, path).items():
            ctx.key_lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _node_to_py(ctx, loader, value_node, path + (key,))
        return out
    if isinstance(node, SequenceNode):
        return [_node_to_py(ctx, loader, item, path + (i,)) for i, item in enumerate(node.value)]
    assert isinstance(node, ScalarNode)
    return loader.construct_object(node, deep=True)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"
