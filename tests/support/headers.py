"""Header lookup shared by recorded requests (origin.py) and parsed responses
(harness.py): `headers` is a list of (lower-case name, value) bytes pairs."""
from __future__ import annotations


class HeaderLookup:
    headers: list

    def header(self, name: str | bytes) -> bytes | None:
        """The value of the only header `name` (None if absent; AssertionError if repeated)."""
        vals = self.header_values(name)
        assert len(vals) <= 1, f"header {name!r} appears {len(vals)} times: {vals}"
        return vals[0] if vals else None

    def header_values(self, name: str | bytes) -> list:
        if isinstance(name, str):
            name = name.encode()
        return [v for n, v in self.headers if n == name.lower()]
