"""Istio's standard metrics from the data plane's "istio" histograms.

With ``admin.metrics.istio: true`` each worker keeps one histogram per
destination cluster and exact response code (core_istio.pxi); here they
become Istio's families, as its telemetry (the stats plugin) names them:

- ``istio_requests_total`` (counter): the histogram's count;
- ``istio_request_duration_milliseconds`` (histogram, ms buckets: Istio's
  default bounds, which are Envoy's: 0.5 ms ... 1 h).

Labels: ``reporter``, ``source_workload``, ``source_workload_namespace``,
``destination_service`` and ``destination_service_name`` (the cluster's
name), ``destination_workload`` (unknown to a client sidecar: "unknown"),
``request_protocol`` ("http"), ``response_code`` ("0" when no response was
sent), ``grpc_response_status`` ("": not tracked yet), ``response_flags``
("-": Envoy's response flags are not kept per request yet),
``connection_security_policy`` ("unknown").
"""
from __future__ import annotations

import os
import socket
from typing import Any

from fastmesh.admin.metrics import _number, _scaled

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"


def source_labels(workload: str = "", namespace: str = "", reporter: str = "source"
                  ) -> list[tuple[str, str]]:
    """The labels every sample carries: who reports, from which workload.
    Defaults as Istio's sidecar finds them: $ISTIO_META_WORKLOAD_NAME (else
    the host name), $POD_NAMESPACE (else "default")."""
    return [("reporter", reporter),
            ("source_workload", workload or os.environ.get("ISTIO_META_WORKLOAD_NAME")
             or socket.gethostname()),
            ("source_workload_namespace", namespace or os.environ.get("POD_NAMESPACE")
             or "default")]


def istio_families(merged: dict[str, Any], source: list[tuple[str, str]]
                   ) -> dict[str, list[Any]]:
    """``{name: [kind, help, samples]}`` (admin.metrics.families' format)."""
    requests: list[Any] = []
    duration: list[Any] = []
    for h in merged.get("histograms", ()):
        if h["prefix"] != "istio":
            continue
        lab = dict(h["labels"])
        service = lab.get("destination_service", "unknown")
        labels = source + [("destination_service", service),
                           ("destination_service_name", service),
                           ("destination_workload", "unknown"),
                           ("request_protocol", "http"),
                           ("response_code", lab.get("response_code", "0")),
                           ("grpc_response_status", ""),
                           ("response_flags", "-"),
                           ("connection_security_policy", "unknown")]
        requests.append((REQUESTS, labels, _number(h["count"])))
        cum = 0
        les = [_scaled(float(b) * 1000.0) for b in h["bounds"]] + ["+Inf"]
        for le, n in zip(les, h["buckets"]):
            cum += n
            duration.append((DURATION + "_bucket", labels + [("le", le)], str(cum)))
        duration.append((DURATION + "_sum", labels, _number(float(h["sum"]) * 1000.0)))
        duration.append((DURATION + "_count", labels, _number(h["count"])))
    if not requests:
        return {}
    return {REQUESTS: ["counter", "Requests, by destination service and response code "
                                  "(Istio's standard metric).", requests],
            DURATION: ["histogram", "Request duration in milliseconds (Istio's standard "
                                    "metric).", duration]}
