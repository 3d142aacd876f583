"""The HTTP desync corpus (http-desync-guardian) against fastmesh._http1.

Each YAML case describes one request (method, uri, version, headers) and how
dangerous it is. Two properties are checked per case:

* every `Severe` case is rejected by the parser;
* when the parser accepts a case, the framing it chose (body kind and length)
  is the one an oracle (h11 or httptools/llhttp) infers, or the oracle
  rejects the request. A different framing would be a desync between us and
  a server behind us.

The corpus is vendored in tests/data/http-desync-guardian (Apache-2.0)
(override with FASTMESH_DESYNC_CORPUS). Cases without a Host header get
`Host: example.com` appended: otherwise every HTTP/1.1 case would stop at
"Missing Host header" and the framing rules would go untested.
"""

import os
import subprocess
import sys
from pathlib import Path

import h11
import httptools
import pytest

from support import desync

from fastmesh._http1 import BODY_KIND_CHUNKED, BODY_KIND_LENGTH, BODY_KIND_NONE, Http1Parser

CHUNKED_BODY = desync.CHUNKED_BODY
CORPUS = desync.CORPUS
_bytes = desync.corpus_bytes
build_head = desync.build_head


load_cases = desync.load_cases


def oracle_h11(msg):
    """Body h11 reads from msg, or None if it rejects / cannot complete it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(msg)
    body = b""
    try:
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return body
            elif ev is h11.NEED_DATA or ev is h11.PAUSED:
                return "incomplete"
    except h11.RemoteProtocolError:
        return None


def oracle_httptools(msg):
    class Proto:
        body, done = b"", 0

        def on_body(self, b):
            self.body += b

        def on_message_complete(self):
            self.done += 1

    proto = Proto()
    try:
        httptools.HttpRequestParser(proto).feed_data(msg)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return None
    return proto.body if proto.done == 1 else "incomplete"


CASES = load_cases()


@pytest.mark.parametrize("case", CASES)
def test_desync_case(case):
    desync.require_case(case)
    raw_head = build_head(case)
    p = Http1Parser(True)
    r = p.py_parse_head(raw_head)
    tier = case["expected"]["tier"]
    if tier == "Severe":
        assert r == -1, f"Severe case accepted: {raw_head!r}"
        assert p.error_status in (400, 505)
        assert p.error_reason
        return
    if r == -1:
        return                      # stricter than required: fine
    assert r == len(raw_head), f"head not consumed whole: {r} of {len(raw_head)}"

    # Give the message the body our framing expects, then ask the oracles
    # how they frame exactly those bytes.
    if p.body == BODY_KIND_LENGTH:
        body = b"x" * p.content_length
        msg = raw_head + body
    elif p.body == BODY_KIND_CHUNKED:
        body = b"hello"
        msg = raw_head + CHUNKED_BODY
    else:
        assert p.body == BODY_KIND_NONE
        body = b""
        msg = raw_head
    answers = {"h11": oracle_h11(msg), "httptools": oracle_httptools(msg)}
    accepted = {k: v for k, v in answers.items() if v is not None}
    mismatched = {k: v for k, v in accepted.items() if v != body}
    # Accepted by an oracle => framed identically by it.
    assert not mismatched, (
        f"framing mismatch for {raw_head!r}: ours body={body[:20]!r}... "
        f"(len {len(body)}), oracles: { {k: (v if isinstance(v, str) else len(v)) for k, v in answers.items()} }")


def test_corpus_has_severe_cases():
    # The corpus is in the repository: its absence is a failure, not a skip.
    desync.require_case(CASES[0].values[0])
    assert sum(1 for c in CASES if c.values[0]["expected"]["tier"] == "Severe") >= 50


def test_missing_corpus_fails_not_skips(tmp_path):
    # Run this module against a corpus path that does not exist: the cases
    # must fail (the corpus is vendored; its loss is a bug, not a skip).
    env = dict(os.environ, FASTMESH_DESYNC_CORPUS=str(tmp_path / "no-corpus"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-k", "not missing_corpus", "-rfs", __file__],
                       env=env, capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 failed" in r.stdout and "skipped" not in r.stdout, r.stdout
