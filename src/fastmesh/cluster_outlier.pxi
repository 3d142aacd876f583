# cluster_outlier.pxi: outlier detection, a cluster-state hook (Envoy's
# upstream/outlier_detection_impl.cc, config.cluster.v3.OutlierDetection).
#
# Passive: each attempt's outcome (UpstreamRequest.outcome, an HTTP status
# or an OUT_* local-origin result) reaches the cluster's detector when the
# attempt ends (UpstreamRequest.end); a TCP proxy connect reports its
# success or failure (core_tcp.pxi). A cluster without `outlier_detection`
# has no detector: the hot path pays one pointer test in end().
#
#  consecutive    per endpoint: 5xx, gateway failures (502/503/504) and,
#                 with split_external_local_origin_errors, local-origin
#                 failures; a success resets them. Reaching the configured
#                 count is a detection, ejected with the enforcing_* chance.
#  interval sweep success rate (mean - stdev * factor / 1000 over endpoints
#                 with enough volume in the last interval) and failure
#                 percentage; and returns: an ejected endpoint comes back once
#                 min(base_ejection_time * backoff, max_ejection_time) + its
#                 jitter has passed, where backoff grows by one per ejection
#                 and shrinks by one per interval spent healthy (Envoy's).
#
# Ejection sets EP_FAILED_OUTLIER_CHECK through ClusterState.set_health_flag:
# the pick skips the endpoint (outside panic). An endpoint's monitor lives on
# its Endpoint, so it goes when the endpoint leaves the set and stays with it
# across reloads. Each worker has its own detector (docs/design.md).

import logging as _logging

cdef object _od_log = _logging.getLogger("fastmesh.outlier")

_OD_NAMES = ("consecutive_5xx", "consecutive_gateway_failure",
             "consecutive_local_origin_failure", "success_rate",
             "local_origin_success_rate", "failure_percentage",
             "local_origin_failure_percentage")


@cython.final
cdef class OutlierConf:
    """A cluster's outlier_detection settings (Envoy's names and defaults;
    durations in seconds, percentages 0-100)."""

    def __init__(self, long consecutive_5xx=5, long consecutive_gateway_failure=5,
                 long consecutive_local_origin_failure=5,
                 bint split_external_local_origin_errors=False,
                 double interval=10.0, double base_ejection_time=30.0,
                 double max_ejection_time=300.0, double max_ejection_time_jitter=0.0,
                 long max_ejection_percent=10,
                 long enforcing_consecutive_5xx=100,
                 long enforcing_consecutive_gateway_failure=0,
                 long enforcing_consecutive_local_origin_failure=100,
                 long enforcing_success_rate=100,
                 long enforcing_local_origin_success_rate=100,
                 long enforcing_failure_percentage=0,
                 long enforcing_failure_percentage_local_origin=0,
                 long success_rate_minimum_hosts=5, long success_rate_request_volume=100,
                 long success_rate_stdev_factor=1900, long failure_percentage_threshold=85,
                 long failure_percentage_minimum_hosts=5,
                 long failure_percentage_request_volume=50,
                 bint always_eject_one_host=False):
        self.consecutive_5xx = consecutive_5xx
        self.consecutive_gateway_failure = consecutive_gateway_failure
        self.consecutive_local_origin_failure = consecutive_local_origin_failure
        self.split_external_local_origin_errors = split_external_local_origin_errors
        self.interval = interval
        self.base_ejection_time = base_ejection_time
        self.max_ejection_time = max_ejection_time
        self.max_ejection_time_jitter = max_ejection_time_jitter
        self.max_ejection_percent = max_ejection_percent
        self.enforcing[OD_CONSECUTIVE_5XX] = enforcing_consecutive_5xx
        self.enforcing[OD_CONSECUTIVE_GATEWAY_FAILURE] = enforcing_consecutive_gateway_failure
        self.enforcing[OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] = \
            enforcing_consecutive_local_origin_failure
        self.enforcing[OD_SUCCESS_RATE] = enforcing_success_rate
        self.enforcing[OD_LOCAL_ORIGIN_SUCCESS_RATE] = enforcing_local_origin_success_rate
        self.enforcing[OD_FAILURE_PERCENTAGE] = enforcing_failure_percentage
        self.enforcing[OD_LOCAL_ORIGIN_FAILURE_PERCENTAGE] = \
            enforcing_failure_percentage_local_origin
        self.success_rate_minimum_hosts = success_rate_minimum_hosts
        self.success_rate_request_volume = success_rate_request_volume
        self.success_rate_stdev_factor = success_rate_stdev_factor
        self.failure_percentage_threshold = failure_percentage_threshold
        self.failure_percentage_minimum_hosts = failure_percentage_minimum_hosts
        self.failure_percentage_request_volume = failure_percentage_request_volume
        self.always_eject_one_host = always_eject_one_host

    def enforcing_percent(self, str kind):
        """The enforcing_* percentage of an ejection type (its _OD_NAMES name)."""
        return self.enforcing[_OD_NAMES.index(kind)]


@cython.final
cdef class OutlierHost:
    """One endpoint's outlier monitor (tests read its fields)."""

    def __cinit__(self):
        self.unejected_at = -1.0


@cython.final
cdef class OutlierDetector:
    """A cluster's detector in one worker: fed by the attempts' outcomes,
    swept every `interval`."""

    def __init__(self, ClusterState cluster, OutlierConf conf):
        self.cluster = cluster
        self.conf = conf
        self.arm()

    def set_conf(self, OutlierConf conf):
        """A reload's settings; the endpoints' state is kept."""
        cdef bint rearm = conf.interval != self.conf.interval
        self.conf = conf
        if rearm:
            self.stop()
            self.arm()

    cdef void arm(self):
        loop = self.cluster.worker.loop
        if loop is not None and self.timer is None:
            self.timer = loop.call_later(self.conf.interval, self._sweep)

    cdef void stop(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def clear(self):
        """The cluster no longer has outlier detection: every ejection ends."""
        cdef Endpoint ep
        self.stop()
        for ep in self.cluster.endpoints:
            if ep.outlier is not None and ep.outlier.ejected:
                self.cluster.set_health_flag(ep.index, EP_FAILED_OUTLIER_CHECK, False)
            ep.outlier = None
        self.active = 0
        self.cluster.st[OUTLIER_DETECTION_EJECTIONS_ACTIVE] = 0

    cdef void recount(self):
        # The endpoint set changed: an ejected endpoint that left is no
        # longer counted (its monitor went with it).
        cdef Endpoint ep
        cdef int n = 0
        for ep in self.cluster.endpoints:
            if ep.outlier is not None and ep.outlier.ejected:
                n += 1
        self.active = n
        self.cluster.st[OUTLIER_DETECTION_EJECTIONS_ACTIVE] = n

    # --- fed by the data path ------------------------------------------------

    cdef void report(self, Endpoint ep, int outcome):
        cdef OutlierHost h = ep.outlier
        if outcome == OUT_NONE or ep.removed:
            return
        if h is None:
            h = ep.outlier = OutlierHost()
        if self.conf.split_external_local_origin_errors:
            if outcome < 0 and outcome != OUT_CONNECT_OK:
                self.local_failure(ep, h)
                return
            # It connected (a status means it did): a local-origin success.
            h.lo_total += 1
            h.lo_ok += 1
            h.clo = 0
            if outcome > 0:
                self.put_http(ep, h, outcome)
            return
        # Not split: local-origin results count as the statuses Envoy maps
        # them to (connect failure and reset 503, timeout 504).
        if outcome == OUT_TIMEOUT:
            outcome = 504
        elif outcome == OUT_CONNECT_OK:
            outcome = 200
        elif outcome < 0:
            outcome = 503
        self.put_http(ep, h, outcome)

    cdef void put_http(self, Endpoint ep, OutlierHost h, int status):
        h.ext_total += 1
        if status >= 500:
            if status == 502 or status == 503 or status == 504:
                h.cgw += 1
                if h.cgw == self.conf.consecutive_gateway_failure:
                    self.consecutive(ep, h, OD_CONSECUTIVE_GATEWAY_FAILURE)
            else:
                h.cgw = 0
            h.c5xx += 1
            if h.c5xx == self.conf.consecutive_5xx:
                self.consecutive(ep, h, OD_CONSECUTIVE_5XX)
        else:
            h.ext_ok += 1
            h.c5xx = 0
            h.cgw = 0

    cdef void local_failure(self, Endpoint ep, OutlierHost h):
        h.lo_total += 1
        h.clo += 1
        if h.clo == self.conf.consecutive_local_origin_failure:
            self.consecutive(ep, h, OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE)

    cdef void consecutive(self, Endpoint ep, OutlierHost h, int kind):
        cdef long count
        if h.ejected:
            return
        if kind == OD_CONSECUTIVE_5XX:
            count = h.c5xx
        elif kind == OD_CONSECUTIVE_GATEWAY_FAILURE:
            count = h.cgw
        else:
            count = h.clo
        self.eject(ep, h, kind, f"{count} {_OD_NAMES[kind].replace('consecutive_', 'consecutive ')}")
        # Reset so that another bout is detected even without a success between.
        if kind == OD_CONSECUTIVE_5XX:
            h.c5xx = 0
        elif kind == OD_CONSECUTIVE_GATEWAY_FAILURE:
            h.cgw = 0
        else:
            h.clo = 0

    cdef void eject(self, Endpoint ep, OutlierHost h, int kind, str why):
        # A detection: counted, then ejected unless max_ejection_percent is
        # reached (always_eject_one_host: one anyway) or the enforcing_*
        # chance says no (Envoy's ejectHost).
        cdef OutlierConf c = self.conf
        cdef int64_t* st = self.cluster.st
        cdef Py_ssize_t n = len(self.cluster.endpoints)
        cdef double now, t
        st[OUTLIER_DETECTION_EJECTIONS_TOTAL] += 1
        st[OUTLIER_DETECTION_EJECTIONS_DETECTED_CONSECUTIVE_5XX + kind] += 1
        if n == 0:
            return
        if not ((self.active + 1) * 100.0 / n <= c.max_ejection_percent
                or (c.always_eject_one_host and self.active == 0)):
            st[OUTLIER_DETECTION_EJECTIONS_OVERFLOW] += 1
            return
        if <long>(rand64() % 100) >= c.enforcing[kind]:
            return
        now = mono_now()
        if h.backoff * c.base_ejection_time < c.max_ejection_time + c.base_ejection_time:
            h.backoff += 1
        h.num_ejections += 1
        h.ejected = True
        h.ejected_at = now
        h.jitter = 0.0
        if c.max_ejection_time_jitter > 0:
            # Not every endpoint back at once (a connection storm).
            h.jitter = (rand64() % (<uint64_t>(c.max_ejection_time_jitter * 1000) + 1)) / 1000.0
        self.active += 1
        st[OUTLIER_DETECTION_EJECTIONS_ACTIVE] = self.active
        st[OUTLIER_DETECTION_EJECTIONS_ENFORCED_TOTAL] += 1
        st[OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_5XX + kind] += 1
        self.cluster.set_health_flag(ep.index, EP_FAILED_OUTLIER_CHECK, True)
        t = min(c.base_ejection_time * h.backoff, c.max_ejection_time) + h.jitter
        _od_log.warning("cluster %s: endpoint %s:%d ejected (%s: %s), for %gs (ejection %d)",
                        self.cluster.name, ep.host, ep.port, _OD_NAMES[kind], why, t,
                        h.num_ejections)

    cdef void uneject(self, Endpoint ep, OutlierHost h, double now):
        h.ejected = False
        h.unejected_at = now
        # A few new errors must not eject it again at once.
        h.c5xx = h.cgw = h.clo = 0
        self.active -= 1
        self.cluster.st[OUTLIER_DETECTION_EJECTIONS_ACTIVE] = self.active
        self.cluster.set_health_flag(ep.index, EP_FAILED_OUTLIER_CHECK, False)
        _od_log.warning("cluster %s: endpoint %s:%d returned to service after %.3gs ejected",
                        self.cluster.name, ep.host, ep.port, now - h.ejected_at)

    # --- the interval sweep --------------------------------------------------

    def _sweep(self):
        self.timer = None
        if self.cluster.removed or self.cluster.outlier is not self:
            return
        try:
            self.sweep(mono_now())
        finally:
            self.arm()

    def sweep(self, double now):
        """Returns, then success-rate and failure-percentage ejections over
        the interval that just ended (tests call it with a clock)."""
        cdef OutlierConf c = self.conf
        cdef Endpoint ep
        cdef OutlierHost h
        cdef list ext = []
        cdef list loc = []
        self.sweeps += 1
        for ep in list(self.cluster.endpoints):
            h = ep.outlier
            if h is None:
                continue
            if not h.ejected:
                # Healthy for a whole interval since its return: its next
                # ejection is shorter (Envoy's backoff decrement).
                if h.unejected_at >= 0 and now - h.unejected_at >= c.interval and h.backoff > 0:
                    h.backoff -= 1
            elif (min(c.base_ejection_time * h.backoff, c.max_ejection_time) + h.jitter
                  <= now - h.ejected_at + 1e-6):
                self.uneject(ep, h, now)
            # This interval's counts are the ones judged; a new interval starts.
            if not h.ejected:
                ext.append((ep, h.ext_total, h.ext_ok))
                loc.append((ep, h.lo_total, h.lo_ok))
            h.ext_total = h.ext_ok = h.lo_total = h.lo_ok = 0
        self._success_rate(ext, OD_SUCCESS_RATE)
        self._failure_percentage(ext, OD_FAILURE_PERCENTAGE)
        if c.split_external_local_origin_errors:
            self._success_rate(loc, OD_LOCAL_ORIGIN_SUCCESS_RATE)
            self._failure_percentage(loc, OD_LOCAL_ORIGIN_FAILURE_PERCENTAGE)

    def _success_rate(self, list counts, int kind):
        cdef OutlierConf c = self.conf
        if len(self.cluster.endpoints) < c.success_rate_minimum_hosts:
            return
        valid = [(ep, 100.0 * ok / total) for ep, total, ok in counts
                 if total > 0 and total >= c.success_rate_request_volume]
        if not valid or len(valid) < c.success_rate_minimum_hosts:
            return
        mean = sum(sr for _, sr in valid) / len(valid)
        stdev = (sum((sr - mean) ** 2 for _, sr in valid) / len(valid)) ** 0.5
        threshold = mean - stdev * c.success_rate_stdev_factor / 1000.0
        for ep, sr in valid:
            if sr < threshold and not (<Endpoint>ep).outlier.ejected:
                self.eject(ep, (<Endpoint>ep).outlier, kind,
                           f"success rate {sr:.1f}% < {threshold:.1f}%")

    def _failure_percentage(self, list counts, int kind):
        cdef OutlierConf c = self.conf
        if len(self.cluster.endpoints) < c.failure_percentage_minimum_hosts:
            return
        valid = [(ep, 100.0 * (total - ok) / total) for ep, total, ok in counts
                 if total > 0 and total >= c.failure_percentage_request_volume]
        if len(valid) < c.failure_percentage_minimum_hosts:
            return
        for ep, fp in valid:
            if fp >= c.failure_percentage_threshold and not (<Endpoint>ep).outlier.ejected:
                self.eject(ep, (<Endpoint>ep).outlier, kind,
                           f"{fp:.1f}% failed >= {c.failure_percentage_threshold}%")

    # --- introspection (tests, admin) -------------------------------------

    def host(self, str address, int port):
        """The OutlierHost of endpoint address:port (None before its first report)."""
        cdef Endpoint ep
        for ep in self.cluster.endpoints:
            if ep.host == address and ep.port == port:
                return ep.outlier
        raise KeyError((address, port))

    @property
    def ejections_active(self):
        return self.active
