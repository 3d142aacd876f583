"""The http-desync-guardian corpus, shared by the codec and live-proxy tests.

The corpus is vendored in tests/data/http-desync-guardian (Apache-2.0, its LICENSE beside it)
(override with FASTMESH_DESYNC_CORPUS). Cases without a Host header get
`Host: example.com` appended: otherwise every HTTP/1.1 case would stop at
"Missing Host header" and the framing rules would go untested.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

CORPUS = Path(os.environ.get(
    "FASTMESH_DESYNC_CORPUS",
    Path(__file__).resolve().parents[1] / "data/http-desync-guardian"))

CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"


def corpus_bytes(value) -> bytes:
    """YAML gives str (or int for bare numbers). "\\xa0" in the corpus means the
    byte 0xA0 (latin-1); only genuinely non-latin-1 text becomes UTF-8."""
    text = str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


MISSING = "corpus-missing"


def load_cases() -> list:
    """One pytest.param per corpus case, with ids "file[i]:name". The corpus
    is part of the repository: when it is missing (or has no case) this is a
    single case that fails (require_case), never a skip."""
    paths = sorted(CORPUS.glob("*.yaml")) if CORPUS.is_dir() else []
    if not paths:
        return [pytest.param(MISSING, id=MISSING)]
    cases = []
    for path in paths:
        with open(path, "rb") as f:
            docs = yaml.safe_load(f) or []
        for i, case in enumerate(docs):
            cases.append(pytest.param(case, id=f"{path.stem}[{i}]:{case['name']}"))
    return cases


def require_case(case) -> None:
    """Fail (not skip) the MISSING placeholder of load_cases()."""
    if case == MISSING:
        pytest.fail(f"desync corpus not found at {CORPUS} (tests/data/http-desync-guardian "
                    "is vendored; FASTMESH_DESYNC_CORPUS overrides it)")


def case_headers(case) -> list[tuple[bytes, bytes]]:
    headers = [(corpus_bytes(h["name"]), corpus_bytes(h["value"]))
               for h in case.get("headers") or []]
    if not any(name.lower() == b"host" for name, _ in headers):
        headers.append((b"Host", b"example.com"))
    return headers


def build_head(case) -> bytes:
    """Request line and headers of a case, ending with the blank line."""
    return (corpus_bytes(case["method"]) + b" " + corpus_bytes(case["uri"]) + b" "
            + corpus_bytes(case["version"]) + b"\r\n"
            + b"".join(n + b": " + v + b"\r\n" for n, v in case_headers(case)) + b"\r\n")
