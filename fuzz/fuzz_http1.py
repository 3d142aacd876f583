"""atheris fuzz harness for fastmesh._http1.

    pip install atheris
    PYTHONPATH=src python fuzz/fuzz_http1.py -atheris_runs=100000 [corpus_dir]

Random bytes go through the C parser in both modes (requests and responses,
the latter answering a method chosen from the input), as one buffer and as
a drip in two pieces, and through the Python Http1Stream wrapper. Checked:
no crash, every consumed count stays within the bytes given, offsets stay in
the buffer, a rejection always carries a status and a reason, and parsing
the head in two steps gives the same result as in one.

The compiled parser is not coverage-instrumented by a plain build, so the
harness instruments its own checks and, when no corpus directory is given,
starts from a seed corpus of valid messages (written to a temporary
directory) that libFuzzer mutates. For C-level coverage build the extension
with clang: CC=clang CFLAGS="-fsanitize=fuzzer-no-link" FASTMESH_MODULES=_http1
python setup.py build_ext --inplace (and LD_PRELOAD the atheris ASan/UBSan
runtime if sanitizers are wanted).
"""
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from fastmesh._http1 import Http1Parser, Http1Stream

METHODS = (b"GET", b"HEAD", b"POST", b"CONNECT", b"OPTIONS")


SEEDS = [
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;e=v\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nbody until close",
]


@atheris.instrument_func
def check_message(is_request, data, method, cut):
    p = Http1Parser(is_request, max_head_bytes=4096, max_headers=32)
    if not is_request:
        p.py_expect_response_to(method)
    n = len(data)
    # Head, fed as a prefix first (which must never be over-consumed), then whole.
    r0 = p.py_parse_head(data[:cut])
    assert -1 <= r0 <= cut, (r0, cut)
    if r0 == -1:
        assert p.error_status in (400, 431, 501, 502, 505) and p.error_reason
        return
    if r0 > 0:
        r = r0
    else:
        r = p.py_parse_head(data)
    assert -1 <= r <= n, (r, n)
    one = Http1Parser(is_request, max_head_bytes=4096, max_headers=32)
    if not is_request:
        one.py_expect_response_to(method)
    r1 = one.py_parse_head(data[:r] if r > 0 else data)
    if r > 0:
        assert r1 == r, (r1, r)          # resumable parse == one-shot parse
    if r <= 0:
        if r == -1:
            assert p.error_status in (400, 431, 501, 502, 505) and p.error_reason
        return
    for h in p.py_headers():
        no, nl, vo, vl, _flags = h
        assert 0 <= no and no + nl <= r and 0 <= vo and vo + vl <= r
    pos = r
    while not p.message_done:
        chunk = data[pos:]
        consumed, off, ln = p.py_parse_body(chunk)
        assert -1 <= consumed <= len(chunk), (consumed, len(chunk))
        if consumed == -1:
            assert p.error_reason
            return
        assert 0 <= off and off + ln <= max(consumed, 0) or ln == 0, (off, ln, consumed)
        if p.message_done and p.trailer_len:
            assert p.trailer_off + p.trailer_len <= consumed
        if consumed == 0:
            break
        pos += consumed
    assert pos <= n


@atheris.instrument_func
def TestOneInput(data):
    fdp = atheris.FuzzedDataProvider(data)
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    cut_seed = fdp.ConsumeIntInRange(0, 1 << 16)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    cut = cut_seed % (len(body) + 1)
    for is_request in (True, False):
        check_message(is_request, body, method, cut)
        s = Http1Stream(is_request, 4096, 32)
        s.expect_response_to(method)
        s.feed(body[:cut])
        s.feed(body[cut:])
        s.feed_eof()


def main():
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        seed_dir = tempfile.mkdtemp(prefix="fuzz_http1_seeds_")
        for i, seed in enumerate(SEEDS):
            # Three leading bytes feed the method / cut choices of TestOneInput.
            with open(os.path.join(seed_dir, f"seed{i}"), "wb") as f:
                f.write(bytes([i % 5, 0, 0]) + seed)
        argv.append(seed_dir)
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
