# core_istio.pxi: Istio's standard request metrics (admin.metrics.istio).
#
# istio_requests_total and istio_request_duration_milliseconds are keyed by
# destination service and exact response code. One histogram per (cluster,
# code) in the registry (prefix "istio", labels {destination_service,
# response_code}) carries both: its count is the request count. Each
# ClusterState keeps its histograms in a dict by code (the worker one for
# requests no cluster served: local replies, no route), so a request costs a
# dict lookup and a record() -- only when the option is on (Worker.istio);
# off, request_ended tests one flag. The admin renders them with Istio's
# names and labels (admin/metrics.py istio_families).

ISTIO_RQ_TIME = "request_duration"


cdef object istio_histogram(ProxyStream s, int code, dict table):
    # First request with this code toward this destination in this worker.
    service = s.cluster.name if s.cluster is not None else "unknown"
    h = s.worker.registry.histogram("istio", ISTIO_RQ_TIME,
                                    (("destination_service", service),
                                     ("response_code", str(code))))
    table[code] = h
    return h


cdef inline void istio_request_ended(ProxyStream s, double elapsed) noexcept:
    # code 0: no response was sent (the client or upstream reset), as Istio.
    cdef int code = s.resp_status
    cdef dict table = s.cluster.istio if s.cluster is not None else s.worker.istio_local
    cdef object h = table.get(code)
    if h is None:
        try:
            h = istio_histogram(s, code, table)
        except Exception:
            return
    (<Histogram>h).record(elapsed)
