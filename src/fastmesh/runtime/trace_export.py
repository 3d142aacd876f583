"""Span export with OTLP, off the request path (docs/observability.md#tracing).

The data plane (``_core``, filter_tracing.pxi) hands each finished span to a
``TraceSink`` as a plain tuple; nothing else happens on the request path.
A ``SpanExporterThread`` owns the sink and a thread that wakes every
``OTEL_BSP_SCHEDULE_DELAY`` milliseconds (or when a batch is full), takes
the spans, turns them into OpenTelemetry SDK ``ReadableSpan`` objects and
hands them to the SDK's OTLP exporter (gRPC or HTTP/protobuf), like the
SDK's BatchSpanProcessor. A collector that is down or slow only costs this
thread: the sink is bounded, and what does not fit is dropped and counted
(``tracing.spans_dropped``); spans of batches the collector refused count
in ``tracing.export_failed``.

One exporter per (protocol, endpoint, service name, ...) per process, kept
across reloads (``exporter_for``). This module runs in the data-plane
process and does not import the control side.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from fastmesh import _core

log = logging.getLogger("fastmesh.tracing")



def _env_int(name: str, default: int) -> int:
    try:
        v = int(os.environ.get(name, default))
    except ValueError:
        return default
    return v if v > 0 else default


class SpanExporterThread:
    """A sink for the data plane and the thread that exports what it holds."""

    def __init__(self, protocol: str, endpoint: str, service_name: str,
                 timeout: float = 10.0, headers: Sequence[tuple[str, str]] = ()) -> None:
        if protocol not in ("grpc", "http"):
            raise ValueError(f"OTLP protocol must be grpc or http, not {protocol!r}")
        self.protocol = protocol
        self.endpoint = endpoint
        self.service_name = service_name
        self.timeout = timeout
        self.headers = tuple(headers)
        # The OpenTelemetry SDK's batch processor settings (its env vars).
        self.delay = _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000.0
        self.batch = _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
        cap = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()      # one flush at a time (thread, shutdown)
        self._exporter: Any = None
        self._failed_setup = False
        self._last_ok = True            # the last export went through
        self.sink = _core.TraceSink(cap, self.batch, self.start, self._wake.set)

    # --- the thread ----------------------------------------------------------

    def start(self) -> None:
        """Start the export thread (the sink calls this at the first span)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fastmesh-otlp",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        # The SDK's import and the exporter are made now, at the first span,
        # not at the first export: a process that ends before its first
        # export (shutdown waits for this thread only so long) still sends.
        with self._lock:
            self._setup()
        while not self._stop:
            self._wake.wait(self.delay)
            self._wake.clear()
            try:
                self.flush()
            except Exception:       # never let the thread die: spans would pile up
                log.exception("tracing: export failed")

    def flush(self) -> None:
        """Export every span waiting now, in batches."""
        with self._lock:
            records = self.sink.take()
            for i in range(0, len(records), self.batch):
                self._export(records[i:i + self.batch])

    def shutdown(self, timeout: float = 2.0) -> None:
        """Export what is left and stop. A thread still busy after `timeout`
        (a collector that does not answer) is left behind (it is a daemon),
        and what is left is exported only if the last export went through:
        a process's exit waits for a collector at most `timeout`, plus one
        export when the collector answers."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._exporter is None and not self._failed_setup:
                # Still importing the SDK (no network in that): wait for it.
                self._thread.join()
            if self._thread.is_alive():
                return
        if self.sink.pending() and self._last_ok:
            self.flush()
        if self._exporter is not None:
            try:
                self._exporter.shutdown()
            except Exception:
                pass
        self.sink.close()

    # --- OTLP ----------------------------------------------------------------

    def _make_exporter(self) -> Any:
        if self.protocol == "grpc":
            return _grpc_exporter(self.endpoint, self.headers, self.timeout)
        return _http_exporter(self.endpoint, self.headers, self.timeout)

    def _setup(self) -> None:
        if self._exporter is None and not self._failed_setup:
            try:
                self._resource, self._scope = _resource_and_scope(self.service_name)
                self._exporter = self._make_exporter()
            except Exception as exc:
                self._failed_setup = True
                log.error("tracing: cannot set up the OTLP exporter (%s): %s",
                          self.protocol, exc)

    def _export(self, records: list) -> None:
        self._setup()
        if self._exporter is None:
            self.sink.export_failed += len(records)
            return
        batch = Encoded(_core.otlp_encode(records, self._resource, self._scope), len(records))
        try:
            ok = self._exporter.export(batch)
        except Exception as exc:
            log.warning("tracing: OTLP export to %s failed: %s", self.endpoint, exc)
            ok = False
        self._last_ok = ok
        if ok:
            self.sink.spans_sent += len(records)
        else:
            self.sink.export_failed += len(records)


class Encoded:
    """A batch of spans in OTLP's wire format (an ExportTraceServiceRequest)."""

    __slots__ = ("data", "count")

    def __init__(self, data: bytes, count: int) -> None:
        self.data = data
        self.count = count


def _resource_and_scope(service_name: str) -> tuple[bytes, bytes]:
    # The batch's Resource and InstrumentationScope, encoded once with
    # opentelemetry-proto's classes (the spans are encoded by _core).
    from opentelemetry.proto.common.v1.common_pb2 import (
        AnyValue,
        InstrumentationScope,
        KeyValue,
    )
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.sdk.resources import Resource as SdkResource

    import fastmesh
    # The SDK's default resource (telemetry.sdk.*), as its exporters send.
    attrs = SdkResource.create({"service.name": service_name}).attributes
    res = Resource(attributes=[KeyValue(key=k, value=AnyValue(string_value=str(v)))
                               for k, v in attrs.items()])
    scope = InstrumentationScope(name="fastmesh",
                                 version=getattr(fastmesh, "__version__", "") or "")
    return res.SerializeToString(), scope.SerializeToString()


def _grpc_exporter(endpoint: str, headers: Sequence[tuple[str, str]], timeout: float) -> Any:
    """The SDK's OTLP/gRPC span exporter (its channel, retries with back-off,
    headers, timeout), sending batches that come encoded."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.trace.export import SpanExportResult

    class Exporter(OTLPSpanExporter):
        def _translate_data(self, data: Encoded) -> ExportTraceServiceRequest:
            return ExportTraceServiceRequest.FromString(data.data)

        def _count_data(self, data: Encoded) -> int:
            return data.count

        def export(self, batch: Encoded) -> bool:      # type: ignore[override]
            return self._export(batch) == SpanExportResult.SUCCESS

    return Exporter(endpoint=endpoint, insecure=True, headers=dict(headers) or None,
                    timeout=timeout)


def _http_exporter(endpoint: str, headers: Sequence[tuple[str, str]], timeout: float) -> Any:
    """The SDK's OTLP/HTTP span exporter (its session, retries, headers,
    timeout), posting batches that come encoded."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    class Exporter(OTLPSpanExporter):
        def export(self, batch: Encoded) -> bool:      # type: ignore[override]
            if self._shutdown:
                return False
            client = getattr(self, "_client", None)
            if client is not None:                     # opentelemetry-exporter-http-transport
                return bool(client.export(batch.data).success)
            return bool(self._export(batch.data).ok)   # older SDKs: a requests.Response

    return Exporter(endpoint=endpoint, headers=dict(headers) or None, timeout=timeout)


_exporters: dict[tuple, SpanExporterThread] = {}
_exporters_lock = threading.Lock()


def exporter_for(protocol: str, endpoint: str, service_name: str, timeout: float = 10.0,
                 headers: Sequence[tuple[str, str]] = ()) -> SpanExporterThread:
    """The process's exporter for these settings, made on first use and kept
    (a reload with the same provider keeps its queue and its thread)."""
    key = (protocol, endpoint, service_name, float(timeout), tuple(headers))
    with _exporters_lock:
        ex = _exporters.get(key)
        if ex is None:
            ex = _exporters[key] = SpanExporterThread(protocol, endpoint, service_name,
                                                      timeout, headers)
        return ex


@atexit.register
def shutdown_all(timeout: float = 2.0) -> None:
    """Export what is waiting and stop every exporter (at process exit)."""
    with _exporters_lock:
        exporters = list(_exporters.values())
        _exporters.clear()
    for ex in exporters:
        try:
            ex.shutdown(timeout)
        except Exception:
            pass
