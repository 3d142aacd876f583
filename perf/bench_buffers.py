"""pyperf microbenchmark: the read-buffer pool against allocating per read.

Baseline: what a plain Protocol costs per read (a new bytes object of the read
size, as asyncio's data_received path makes) and a new bytearray per read.
fastmesh: acquire a pooled ReadBuffer, use it, release it.

    python perf/bench_buffers.py --fast -o /tmp/buffers.json
"""
import pyperf

from fastmesh._buffers import BufferPool, OutBuf

SIZE = 32768
pool = BufferPool(SIZE)
payload = b"x" * 512


def pooled(loops: int) -> float:
    acquire, release = pool.acquire_py, pool.release_py
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        release(acquire())
    return pyperf.perf_counter() - t0


def new_bytes(loops: int) -> float:
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        bytes(SIZE)
    return pyperf.perf_counter() - t0


def new_bytearray(loops: int) -> float:
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        bytearray(SIZE)
    return pyperf.perf_counter() - t0


def outbuf_collect(loops: int) -> float:
    """Collect a 512-byte head + body into one bytes for one write."""
    out = OutBuf(4096)
    add, take = out.add_py, out.take_py
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        add(payload)
        add(payload)
        take()
    return pyperf.perf_counter() - t0


def join_baseline(loops: int) -> float:
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        b"".join((payload, payload))
    return pyperf.perf_counter() - t0


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.bench_time_func("buffer: fastmesh pool acquire+release (32 KiB)", pooled)
    runner.bench_time_func("buffer: baseline new bytes(32 KiB) per read", new_bytes)
    runner.bench_time_func("buffer: baseline new bytearray(32 KiB) per read", new_bytearray)
    runner.bench_time_func("outbuf: fastmesh collect 2x512 B + take", outbuf_collect)
    runner.bench_time_func("outbuf: baseline b''.join 2x512 B", join_baseline)
