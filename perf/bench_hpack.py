"""HPACK decode/encode and HTTP/2 frame parsing: fastmesh._hpack/_h2 against
the hpack/hyperframe packages (h2's own layers), in the same run.

    python perf/bench_hpack.py --fast -o /tmp/hpack.json

Benchmarks (per header block / per frame stream):
  hpack_decode_fastmesh_c     Decoder.decode_loops: the C path the proxy uses
                              (HeaderSlice offsets, no Python object per header)
  hpack_decode_fastmesh_py    Decoder.decode: the same plus a list of tuples
  hpack_decode_hpack          hpack.Decoder.decode(raw=True)
  hpack_encode_fastmesh       Encoder.encode (list of tuples in, bytes out)
  hpack_encode_hpack          hpack.Encoder.encode
  frames_parse_fastmesh_c     count_frames over a 64-frame stream, in C
  frames_parse_hyperframe     hyperframe parse_frame_header + parse_body

Decoders see a block that refers to the dynamic table (the second request on
a connection, the common case); encoders encode the same list each time (the
table state is then warm, as on a long-lived connection).
"""
import hpack
import pyperf
from hyperframe.frame import Frame

from fastmesh._h2 import count_frames, frame_data, frame_headers, frame_ping, frame_window_update
from fastmesh._hpack import Decoder, Encoder

REQUEST = [
    (b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/api/v1/users/12345?fields=name,email"),
    (b":authority", b"users.internal.svc.cluster.local"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    (b"accept", b"application/json, text/plain, */*"),
    (b"accept-encoding", b"gzip, deflate, br"), (b"accept-language", b"en-US,en;q=0.9"),
    (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.abc"),
    (b"x-request-id", b"5f0c3c1e-8b7a-4a51-9a39-8f1c0d1e2f3a"),
    (b"x-forwarded-for", b"10.0.0.1"),
]

_enc = hpack.Encoder()
FIRST = _enc.encode(REQUEST)
SECOND = _enc.encode(REQUEST)        # refers to the dynamic table


def warm_ours():
    d = Decoder()
    d.decode(FIRST)
    return d


def warm_hpack():
    d = hpack.Decoder()
    d.decode(FIRST, raw=True)
    return d


def bench_decode_c(loops):
    d = warm_ours()
    t0 = pyperf.perf_counter()
    d.decode_loops(SECOND, loops)
    return pyperf.perf_counter() - t0


def bench_decode_py(loops):
    d = warm_ours()
    dec = d.decode
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        dec(SECOND)
    return pyperf.perf_counter() - t0


def bench_decode_hpack(loops):
    # hpack mutates its table only for literals with indexing; SECOND is all
    # indexed/non-indexed references to FIRST's entries, so re-decoding is stable.
    d = warm_hpack()
    dec = d.decode
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        dec(SECOND, raw=True)
    return pyperf.perf_counter() - t0


def bench_encode_ours(loops):
    e = Encoder()
    enc = e.encode
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        enc(REQUEST)
    return pyperf.perf_counter() - t0


def bench_encode_hpack(loops):
    e = hpack.Encoder()
    enc = e.encode
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        enc(REQUEST)
    return pyperf.perf_counter() - t0


STREAM = b"".join(
    frame_headers(2 * i + 1, SECOND, False) + frame_data(2 * i + 1, b"x" * 1024, False)
    + frame_data(2 * i + 1, b"y" * 100, True) + frame_window_update(0, 1000)
    for i in range(16)
)
N_FRAMES = count_frames(STREAM)


def bench_frames_ours(loops):
    t0 = pyperf.perf_counter()
    count_frames(STREAM, loops)
    return pyperf.perf_counter() - t0


def bench_frames_hyperframe(loops):
    mv = memoryview(STREAM)
    n = len(STREAM)
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        pos = 0
        while pos < n:
            f, length = Frame.parse_frame_header(mv[pos:pos + 9])
            f.parse_body(mv[pos + 9:pos + 9 + length])
            pos += 9 + length
    return pyperf.perf_counter() - t0


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["request_block_bytes"] = len(SECOND)
    runner.metadata["frames_per_stream"] = N_FRAMES
    runner.bench_time_func("hpack_decode_fastmesh_c", bench_decode_c)
    runner.bench_time_func("hpack_decode_fastmesh_py", bench_decode_py)
    runner.bench_time_func("hpack_decode_hpack", bench_decode_hpack)
    runner.bench_time_func("hpack_encode_fastmesh", bench_encode_ours)
    runner.bench_time_func("hpack_encode_hpack", bench_encode_hpack)
    runner.bench_time_func("frames_parse_fastmesh_c", bench_frames_ours)
    runner.bench_time_func("frames_parse_hyperframe", bench_frames_hyperframe)
