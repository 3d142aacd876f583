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

# Record layouts (filter_tracing.pxi: trace_finish / trace_attempt_end).
SERVER, CLIENT = 1, 2
# UpstreamRequest.outcome below 0 (cluster_outlier.pxd): why an attempt failed.
_OUTCOMES = {0: "cancelled", -1: "connect_failure", -2: "timeout", -3: "reset"}


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
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            return OTLPSpanExporter(endpoint=self.endpoint, insecure=True,
                                    headers=dict(self.headers) or None, timeout=self.timeout)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )
        return HttpExporter(endpoint=self.endpoint, headers=dict(self.headers) or None,
                            timeout=self.timeout)

    def _export(self, records: list) -> None:
        if self._exporter is None and not self._failed_setup:
            try:
                self._exporter = self._make_exporter()
                self._builder = SpanBuilder(self.service_name)
            except Exception as exc:
                self._failed_setup = True
                log.error("tracing: cannot set up the OTLP exporter (%s): %s",
                          self.protocol, exc)
        if self._exporter is None:
            self.sink.export_failed += len(records)
            return
        from opentelemetry.sdk.trace.export import SpanExportResult
        spans = [self._builder.span(r) for r in records]
        try:
            ok = self._exporter.export(spans) == SpanExportResult.SUCCESS
        except Exception as exc:
            log.warning("tracing: OTLP export to %s failed: %s", self.endpoint, exc)
            ok = False
        self._last_ok = ok
        if ok:
            self.sink.spans_sent += len(records)
        else:
            self.sink.export_failed += len(records)


class SpanBuilder:
    """Span records (tuples) -> OpenTelemetry SDK ReadableSpans, with the
    attributes of the OpenTelemetry HTTP semantic conventions."""

    def __init__(self, service_name: str) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        import fastmesh
        self._ReadableSpan = ReadableSpan
        self._SpanContext = SpanContext
        self._Status = Status
        self._StatusCode = StatusCode
        self._kinds = {SERVER: SpanKind.SERVER, CLIENT: SpanKind.CLIENT}
        self._flags = TraceFlags(TraceFlags.SAMPLED)
        self._resource = Resource.create({"service.name": service_name})
        self._scope = InstrumentationScope("fastmesh", getattr(fastmesh, "__version__", None))

    def span(self, rec: tuple) -> Any:
        kind, hi, lo, sid, parent, start, end, status = rec[:8]
        tid = (hi << 64) | lo
        ctx = self._SpanContext(tid, sid, is_remote=False, trace_flags=self._flags)
        method = rec[8].decode("latin-1")
        target = rec[9].decode("latin-1")
        path, _, query = target.partition("?")
        attrs: dict[str, Any] = {"http.request.method": method, "url.path": path}
        if query:
            attrs["url.query"] = query
        error = None
        if kind == SERVER:
            host, client_ip, h2, listener, cluster, attempts, tags = rec[10:17]
            # The caller's span is remote; none: we started the trace (a root).
            pctx = (self._SpanContext(tid, parent, is_remote=True, trace_flags=self._flags)
                    if parent else None)
            authority = host.decode("latin-1")
            name, _, port = authority.rpartition(":") if authority.count(":") == 1 \
                else (authority, "", "")
            attrs["server.address"] = name or authority
            if port.isdigit():
                attrs["server.port"] = int(port)
            attrs["url.scheme"] = "http"
            attrs["client.address"] = client_ip.decode("latin-1")
            attrs["network.protocol.version"] = "2" if h2 else "1.1"
            attrs["fastmesh.listener"] = listener
            if cluster is not None:
                attrs["upstream_cluster"] = cluster     # Envoy's tag
            for k, v in tags:
                attrs[k] = v
            if status:
                attrs["http.response.status_code"] = status
            if status == 0:
                error = "downstream_reset"              # no response went out
            elif status >= 500:
                error = str(status)
        else:
            cluster, host, port, attempt = rec[10:14]
            pctx = self._SpanContext(tid, parent, is_remote=False, trace_flags=self._flags)
            attrs["server.address"] = host
            attrs["server.port"] = port
            attrs["url.full"] = f"http://{host}:{port}{target}"
            attrs["upstream_cluster"] = cluster
            attrs["upstream_address"] = f"{host}:{port}"     # Envoy's tag
            if attempt > 1:
                attrs["http.request.resend_count"] = attempt - 1
            if status > 0:
                attrs["http.response.status_code"] = status
                if status >= 500:
                    error = str(status)
            else:
                error = _OUTCOMES.get(status, "error")
        if error is not None:
            attrs["error.type"] = error
            st = self._Status(self._StatusCode.ERROR, error)
        else:
            st = self._Status(self._StatusCode.UNSET)
        return self._ReadableSpan(
            name=method, context=ctx, parent=pctx, resource=self._resource,
            attributes=attrs, kind=self._kinds[kind], status=st, start_time=start,
            end_time=end, instrumentation_scope=self._scope)


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
