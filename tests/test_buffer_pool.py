"""The worker's read-buffer pool (_buffers.BufferPool) on the hot path.

Connections give their buffer back from inside buffer_updated(), while
uvloop still holds its view of it; the pool used to drop every such buffer,
so nearly every read allocated (0 reuses for 2000 keep-alive requests).
"""
from support.harness import http_config

from fastmesh._buffers import BufferPool


def test_keep_alive_requests_reuse_buffers(origin, start_proxy, clients):
    proxy = start_proxy(http_config(origin))
    c = clients(proxy.address())
    for i in range(300):
        assert c.request("GET", f"/r{i}").status == 200
    st = proxy.stats()
    # Each request takes a buffer for the client's read and one for the
    # upstream's response: 600 or so, nearly all from the pool.
    assert st["buffers_reused"] >= 500, st
    assert st["buffers_allocated"] <= 8, st


def test_exported_buffer_is_kept_but_not_handed_out_while_exported():
    pool = BufferPool(4096)
    b = pool.acquire_py()
    view = memoryview(b)            # as uvloop holds it during buffer_updated()
    pool.release_py(b)
    assert pool.free_count == 1     # kept ...
    other = pool.acquire_py()
    assert other is not b           # ... but not reused while the view lives
    view.release()
    pool.release_py(other)
    assert pool.acquire_py() in (b, other)
    assert pool.reused == 1
