"""The gRPC origin of the `grpc` bench scenario, and a one-call check.

`python -m fastmesh.bench.grpcorigin PORT` serves `/fmbench.Bench/Unary`
(grpcio, no protobuf: the handler takes and returns raw bytes, echoing the
request message). The load generator sends one fixed gRPC message
(GRPC_MESSAGE, framed by `grpc_frame`) with h2load.

grpcio's Python server is the slowest part of this scenario (a few thousand
calls/s on one core): the `direct` row shows the origin's own ceiling, and
the proxies are compared at that load (latency and CPU per call matter
more than throughput here).
"""
from __future__ import annotations

import sys

GRPC_SERVICE = "fmbench.Bench"
GRPC_METHOD = "Unary"
GRPC_PATH = f"/{GRPC_SERVICE}/{GRPC_METHOD}"
GRPC_MESSAGE = b"\x0a\x0dhello world!\n"     # a protobuf-shaped 15-byte message


def grpc_frame(message: bytes = GRPC_MESSAGE) -> bytes:
    """Length-prefixed message (gRPC over HTTP/2): flag byte, 4-byte length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def call_ok(port: int, timeout: float = 1.0) -> bool:
    """One unary call through 127.0.0.1:port that echoes GRPC_MESSAGE."""
    import grpc

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            f = ch.unary_unary(GRPC_PATH)
            return f(GRPC_MESSAGE, timeout=timeout) == GRPC_MESSAGE
    except grpc.RpcError:
        return False


def serve(port: int) -> None:
    from concurrent import futures

    import grpc

    handler = grpc.method_handlers_generic_handler(GRPC_SERVICE, {
        GRPC_METHOD: grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
