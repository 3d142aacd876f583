# cython: language_level=3
"""HTTP/2 codec of the data plane (RFC 9113): frames and a sans-IO connection.

Two layers, both over caller-owned memory:

* the frame layer: `parse_frame()` validates one frame (length against
  SETTINGS_MAX_FRAME_SIZE, padding, per-type sizes and stream-id rules,
  SETTINGS values) and returns offsets; `write_*()` append frames to an OutBuf.
* `H2Connection`: the connection state machine, client or server side, in the
  spirit of h2 (bytes in, events out, data_to_send out). Stream states follow
  RFC 9113 5.1 as a lookup table (`_TRANSITIONS`): anything not in it is an
  error of the kind the RFC names (stream error -> RST_STREAM, connection
  error -> GOAWAY). Flow control follows the slow side: received DATA is
  acknowledged (WINDOW_UPDATE) only when the application says it consumed it.

Protections, each a counter with a public threshold (docs/http2.md): rapid
reset (CVE-2023-44487), SETTINGS/PING floods (ACKs queued and not flushed),
empty DATA/CONTINUATION floods, CONTINUATION floods (compressed header block
cap), too many streams (REFUSED_STREAM) and the HPACK limits (header list size
and count, enforced by the decoder).

`Connection` at the end is the Python wrapper (tests, tools): h2-like methods
and event namedtuples.
"""

from collections import namedtuple

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy, memcmp

from fastmesh._headers cimport (
    HeaderSlice, HF_HOP, HF_TE,
)
from fastmesh._buffers cimport OutBuf
from fastmesh._hpack cimport (
    HpackDecoder, HpackEncoder, PyHeaders, HPACK_OK, HPACK_E_COMPRESSION, HPACK_E_TOO_LARGE,
    HPACK_E_MALFORMED, HPACK_NEVER_INDEX,
)

cdef enum:
    WINDOW_MAX = 0x7fffffff
    FRAME_SIZE_MIN = 16384
    FRAME_SIZE_MAX = 16777215
    SID_MASK = 0x7fffffff
    RFC_INITIAL_WINDOW = 65535

cdef const char* PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
cdef enum:
    PREFACE_LEN = 24

# connection states
cdef enum:
    CS_PREFACE = 0      # server: waiting for the client preface
    CS_SETTINGS = 1     # the peer's first frame must be SETTINGS
    CS_OPEN = 2
    CS_CLOSED = 3

# stream flags
cdef enum:
    SF_HEADERS_RECV = 1     # the peer's initial headers arrived
    SF_FINAL_RECV = 2       # client: the final (non-1xx) response arrived
    SF_HEADERS_SENT = 4     # we sent headers (server: the response started)
    SF_LOCAL = 8            # we opened the stream

# how a stream closed (remembered for frames that arrive later)
cdef enum:
    CL_NORMAL = 1
    CL_RESET_LOCAL = 2      # we sent RST_STREAM (or refused/ignored it): late
                            # frames are ignored (RFC 9113 5.1 "closed")
    CL_RESET_PEER = 3

cdef uint64_t GRACEFUL_PING = 0x6673686d676f6177ULL   # "fshmgoaw"


# ---------------------------------------------------------------------------
# Frame layer

cdef inline uint32_t _u32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _put32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>(v >> 24)
    p[1] = <char>(v >> 16)
    p[2] = <char>(v >> 8)
    p[3] = <char>v


cdef inline Py_ssize_t _err(H2Frame* f, uint32_t code, bint conn, Py_ssize_t r) noexcept nogil:
    f.error = code
    f.error_conn = conn
    return r


cdef Py_ssize_t parse_frame(const char* data, Py_ssize_t n, uint32_t max_frame_size,
                            H2Frame* f) noexcept nogil:
    cdef const unsigned char* p = <const unsigned char*>data
    cdef uint32_t length, pad = 0, i, sid, v
    cdef Py_ssize_t total, off = 9, end
    cdef const unsigned char* e
    if n < 9:
        return 0
    length = (<uint32_t>p[0] << 16) | (<uint32_t>p[1] << 8) | p[2]
    f.type = p[3]
    f.flags = p[4]
    f.stream_id = sid = _u32(p + 5) & SID_MASK
    f.length = length
    f.error = 0
    f.error_conn = False
    f.body_off = 9
    f.body_len = length
    f.value = 0
    f.last_stream_id = 0
    f.opaque = 0
    f.weight = 0
    f.exclusive = False
    if length > max_frame_size:
        return _err(f, H2_FRAME_SIZE_ERROR, True, -1)
    total = 9 + <Py_ssize_t>length
    if n < total:
        return 0
    end = total
    if f.type == FT_DATA or f.type == FT_HEADERS or f.type == FT_PUSH_PROMISE:
        if sid == 0:
            return _err(f, H2_PROTOCOL_ERROR, True, total)
        if f.flags & FL_PADDED:
            if length < 1:
                return _err(f, H2_FRAME_SIZE_ERROR, True, total)
            pad = p[9]
            off = 10
        if f.type == FT_HEADERS and (f.flags & FL_PRIORITY):
            if end - off < 5:
                return _err(f, H2_FRAME_SIZE_ERROR, True, total)
            v = _u32(p + off)
            f.exclusive = (v >> 31) != 0
            f.value = v & SID_MASK
            f.weight = p[off + 4]
            off += 5
            if f.value == sid:
                return _err(f, H2_PROTOCOL_ERROR, False, total)
        elif f.type == FT_PUSH_PROMISE:
            if end - off < 4:
                return _err(f, H2_FRAME_SIZE_ERROR, True, total)
            f.value = _u32(p + off) & SID_MASK
            off += 4
        if <Py_ssize_t>pad > end - off:
            # padding must be shorter than the remaining payload
            return _err(f, H2_PROTOCOL_ERROR, True, total)
        f.body_off = off
        f.body_len = end - off - pad
    elif f.type == FT_CONTINUATION:
        if sid == 0:
            return _err(f, H2_PROTOCOL_ERROR, True, total)
    elif f.type == FT_PRIORITY:
        if sid == 0:
            return _err(f, H2_PROTOCOL_ERROR, True, total)
        if length != 5:
            return _err(f, H2_FRAME_SIZE_ERROR, False, total)
        v = _u32(p + 9)
        f.exclusive = (v >> 31) != 0
        f.value = v & SID_MASK
        f.weight = p[13]
        if f.value == sid:
            return _err(f, H2_PROTOCOL_ERROR, False, total)
    elif f.type == FT_RST_STREAM:
        if sid == 0:
            return _err(f, H2_PROTOCOL_ERROR, True, total)
        if length != 4:
            return _err(f, H2_FRAME_SIZE_ERROR, True, total)
        f.value = _u32(p + 9)
    elif f.type == FT_SETTINGS:
        if sid != 0:
            return _err(f, H2_PROTOCOL_ERROR, True, total)
        if (f.flags & FL_ACK) and length != 0:
            return _err(f, H2_FRAME_SIZE_ERROR, True, total)
        if length % 6:
            return _err(f, H2_FRAME_SIZE_ERROR, True, total)
        i = 0
        while i < length:
            e = p + 9 + i
            v = _u32(e + 2)
            if e[0] == 0 and e[1] == S_ENABLE_PUSH and v > 1:
                return _err(f, H2_PROTOCOL_ERROR, True, total)
            if e[0] == 0 and e[1] == S_INITIAL_WINDOW_SIZE and v > WINDOW_MAX:
                return _err(f, H2_FLOW_CONTROL_ERROR, True, total)
            if e[0] == 0 and e[1] == S_MAX_FRAME_SIZE and (v < FRAME_SIZE_MIN or v > FRAME_SIZE_MAX):
                return _err(f, H2_PROTOCOL_ERROR, True, total)
            if e[0] == 0 and e[1] == S_ENABLE_CONNECT_PROTOCOL and v > 1:
                return _err(f, H2_PROTOCOL_ERROR, True, total)
            i += 6
    elif f.type == FT_PING:
        if sid != 0:
            return _err(f, H2_PROTOCOL_ERROR, True, total)
        if length != 8:
            return _err(f, H2_FRAME_SIZE_ERROR, True, total)
        f.opaque = (<uint64_t>_u32(p + 9) << 32) | _u32(p + 13)
    elif f.type == FT_GOAWAY:
        if sid != 0:
            return _err(f, H2_PROTOCOL_ERROR, True, total)
        if length < 8:
            return _err(f, H2_FRAME_SIZE_ERROR, True, total)
        f.last_stream_id = _u32(p + 9) & SID_MASK
        f.value = _u32(p + 13)
        f.body_off = 17
        f.body_len = length - 8
    elif f.type == FT_WINDOW_UPDATE:
        if length != 4:
            return _err(f, H2_FRAME_SIZE_ERROR, True, total)
        f.value = _u32(p + 9) & SID_MASK
        if f.value == 0:
            return _err(f, H2_PROTOCOL_ERROR, sid == 0, total)
    # unknown types: ignored by the connection (RFC 9113 4.1)
    return total


cdef int write_frame_header(OutBuf out, uint32_t length, uint8_t type, uint8_t flags,
                            uint32_t sid) except -1:
    cdef char* p
    out.reserve(9)
    p = out.data + out.len
    p[0] = <char>(length >> 16)
    p[1] = <char>(length >> 8)
    p[2] = <char>length
    p[3] = <char>type
    p[4] = <char>flags
    _put32(p + 5, sid & SID_MASK)
    out.len += 9
    return 0


cdef int write_data(OutBuf out, uint32_t sid, const char* p, Py_ssize_t n,
                    bint end_stream, uint8_t pad) except -1:
    cdef char z[256]
    cdef uint8_t flags = FL_END_STREAM if end_stream else 0
    if pad:
        write_frame_header(out, <uint32_t>(n + 1 + pad), FT_DATA, flags | FL_PADDED, sid)
        z[0] = <char>pad
        out.add(z, 1)
        out.add(p, n)
        out.reserve(pad)
        for i in range(pad):
            out.data[out.len + i] = 0
        out.len += pad
        return 0
    write_frame_header(out, <uint32_t>n, FT_DATA, flags, sid)
    out.add(p, n)
    return 0


cdef int write_header_block(OutBuf out, uint32_t sid, const char* block, Py_ssize_t n,
                            bint end_stream, uint32_t max_frame_size) except -1:
    cdef Py_ssize_t k = n if n <= max_frame_size else max_frame_size
    cdef uint8_t flags = FL_END_STREAM if end_stream else 0
    write_frame_header(out, <uint32_t>k, FT_HEADERS,
                       flags | (FL_END_HEADERS if k == n else 0), sid)
    out.add(block, k)
    while k < n:
        m = n - k if n - k <= max_frame_size else max_frame_size
        write_frame_header(out, <uint32_t>m, FT_CONTINUATION,
                           FL_END_HEADERS if k + m == n else 0, sid)
        out.add(block + k, m)
        k += m
    return 0


cdef int write_priority(OutBuf out, uint32_t sid, uint32_t dep, uint8_t weight,
                        bint exclusive) except -1:
    cdef char b[5]
    write_frame_header(out, 5, FT_PRIORITY, 0, sid)
    _put32(b, (dep & SID_MASK) | (0x80000000u if exclusive else 0))
    b[4] = <char>weight
    return out.add(b, 5)


cdef int write_rst_stream(OutBuf out, uint32_t sid, uint32_t code) except -1:
    cdef char b[4]
    write_frame_header(out, 4, FT_RST_STREAM, 0, sid)
    _put32(b, code)
    return out.add(b, 4)


cdef int write_settings(OutBuf out, const uint32_t* pairs, int n, bint ack) except -1:
    cdef char b[6]
    cdef int i
    write_frame_header(out, <uint32_t>(6 * n), FT_SETTINGS, FL_ACK if ack else 0, 0)
    for i in range(n):
        b[0] = <char>(pairs[2 * i] >> 8)
        b[1] = <char>pairs[2 * i]
        _put32(b + 2, pairs[2 * i + 1])
        out.add(b, 6)
    return 0


cdef int write_push_promise(OutBuf out, uint32_t sid, uint32_t promised,
                            const char* block, Py_ssize_t n) except -1:
    cdef char b[4]
    write_frame_header(out, <uint32_t>(n + 4), FT_PUSH_PROMISE, FL_END_HEADERS, sid)
    _put32(b, promised & SID_MASK)
    out.add(b, 4)
    return out.add(block, n)


cdef int write_ping(OutBuf out, uint64_t opaque, bint ack) except -1:
    cdef char b[8]
    write_frame_header(out, 8, FT_PING, FL_ACK if ack else 0, 0)
    _put32(b, <uint32_t>(opaque >> 32))
    _put32(b + 4, <uint32_t>opaque)
    return out.add(b, 8)


cdef int write_goaway(OutBuf out, uint32_t last_sid, uint32_t code,
                      const char* debug, Py_ssize_t n) except -1:
    cdef char b[8]
    write_frame_header(out, <uint32_t>(8 + n), FT_GOAWAY, 0, 0)
    _put32(b, last_sid & SID_MASK)
    _put32(b + 4, code)
    out.add(b, 8)
    if n:
        out.add(debug, n)
    return 0


cdef int write_window_update(OutBuf out, uint32_t sid, uint32_t increment) except -1:
    cdef char b[4]
    write_frame_header(out, 4, FT_WINDOW_UPDATE, 0, sid)
    _put32(b, increment & SID_MASK)
    return out.add(b, 4)


# ---------------------------------------------------------------------------
# Stream state machine (RFC 9113 5.1) as a lookup table.

cdef enum:
    IN_SEND_H = 0
    IN_SEND_H_ES = 1
    IN_SEND_D = 2
    IN_SEND_D_ES = 3
    IN_SEND_RST = 4
    IN_RECV_H = 5
    IN_RECV_H_ES = 6
    IN_RECV_D = 7
    IN_RECV_D_ES = 8
    IN_RECV_RST = 9
    N_INPUTS = 10
    # errors (negative table values)
    T_LOCAL = -1            # the application asked for something the state forbids
    T_STREAM_CLOSED = -2    # stream error STREAM_CLOSED (RST_STREAM)
    T_CONN_PROTOCOL = -3    # connection error PROTOCOL_ERROR (GOAWAY)

_O, _HCL, _HCR, _C = SS_OPEN, SS_HALF_CLOSED_LOCAL, SS_HALF_CLOSED_REMOTE, SS_CLOSED
_TRANSITIONS = {
    # idle: HEADERS opens; DATA or RST_STREAM on an idle stream is a connection error
    (SS_IDLE, IN_SEND_H): _O, (SS_IDLE, IN_SEND_H_ES): _HCL,
    (SS_IDLE, IN_RECV_H): _O, (SS_IDLE, IN_RECV_H_ES): _HCR,
    (SS_IDLE, IN_RECV_D): T_CONN_PROTOCOL, (SS_IDLE, IN_RECV_D_ES): T_CONN_PROTOCOL,
    (SS_IDLE, IN_RECV_RST): T_CONN_PROTOCOL,
    # open: both sides send; END_STREAM half-closes
    (_O, IN_SEND_H): _O, (_O, IN_SEND_H_ES): _HCL, (_O, IN_SEND_D): _O,
    (_O, IN_SEND_D_ES): _HCL, (_O, IN_SEND_RST): _C,
    (_O, IN_RECV_H): _O, (_O, IN_RECV_H_ES): _HCR, (_O, IN_RECV_D): _O,
    (_O, IN_RECV_D_ES): _HCR, (_O, IN_RECV_RST): _C,
    # half-closed (local): we are done sending, the peer still sends
    (_HCL, IN_SEND_RST): _C,
    (_HCL, IN_RECV_H): _HCL, (_HCL, IN_RECV_H_ES): _C, (_HCL, IN_RECV_D): _HCL,
    (_HCL, IN_RECV_D_ES): _C, (_HCL, IN_RECV_RST): _C,
    # half-closed (remote): the peer is done; more from it is STREAM_CLOSED
    (_HCR, IN_SEND_H): _HCR, (_HCR, IN_SEND_H_ES): _C, (_HCR, IN_SEND_D): _HCR,
    (_HCR, IN_SEND_D_ES): _C, (_HCR, IN_SEND_RST): _C, (_HCR, IN_RECV_RST): _C,
}

cdef signed char TRANS[5][N_INPUTS]


def _init_transitions():
    cdef int s, i
    for s in range(5):
        for i in range(N_INPUTS):
            # anything missing: our misuse on send, STREAM_CLOSED on receive
            TRANS[s][i] = _TRANSITIONS.get((s, i), T_LOCAL if i < IN_RECV_H else T_STREAM_CLOSED)


_init_transitions()


cdef inline uint32_t _mix(uint32_t sid) noexcept nogil:
    sid = (sid ^ (sid >> 16)) * 0x45d9f3bu
    return sid ^ (sid >> 16)


# validation of a decoded header list (RFC 9113 8.2, 8.3)
cdef enum:
    HK_REQUEST = 0
    HK_RESPONSE = 1
    HK_TRAILERS = 2

cdef int _check_headers(const char* b, const HeaderSlice* hs, int n, int kind,
                        int* status) noexcept nogil:
    # 0 valid, -1 malformed. *status = :status of a response.
    cdef int i, seen = 0, bit
    cdef bint regular = False, connect = False
    cdef const char* name
    cdef const char* val
    cdef Py_ssize_t nl, vl
    status[0] = 0
    for i in range(n):
        name = b + hs[i].name_off
        nl = hs[i].name_len
        val = b + hs[i].value_off
        vl = hs[i].value_len
        if nl and name[0] == 58:      # ':'
            if regular or kind == HK_TRAILERS:
                return -1
            bit = 0
            if kind == HK_REQUEST:
                if nl == 7 and memcmp(name, b":method", 7) == 0:
                    bit = 1
                    connect = vl == 7 and memcmp(val, b"CONNECT", 7) == 0
                elif nl == 7 and memcmp(name, b":scheme", 7) == 0:
                    bit = 2
                elif nl == 5 and memcmp(name, b":path", 5) == 0:
                    bit = 4
                    if vl == 0:
                        return -1
                elif nl == 10 and memcmp(name, b":authority", 10) == 0:
                    bit = 8
                elif nl == 9 and memcmp(name, b":protocol", 9) == 0:
                    bit = 16
            elif nl == 7 and memcmp(name, b":status", 7) == 0:
                bit = 1
                if vl != 3 or not (48 <= <unsigned char>val[0] <= 57 and 48 <= <unsigned char>val[1] <= 57
                                   and 48 <= <unsigned char>val[2] <= 57):
                    return -1
                status[0] = (val[0] - 48) * 100 + (val[1] - 48) * 10 + (val[2] - 48)
            if bit == 0 or (seen & bit):
                return -1
            seen |= bit
        else:
            regular = True
            if hs[i].flags & HF_HOP:
                # connection-specific fields are malformed in HTTP/2; TE only as "trailers"
                if not ((hs[i].flags & HF_TE) and vl == 8 and memcmp(val, b"trailers", 8) == 0):
                    return -1
    if kind == HK_REQUEST:
        if not (seen & 1):
            return -1
        if connect and not (seen & 16):
            if (seen & 6) or not (seen & 8):
                return -1
        elif (seen & 6) != 6:
            return -1
    elif kind == HK_RESPONSE:
        if not (seen & 1):
            return -1
    return 0


# ---------------------------------------------------------------------------
# Connection

cdef class H2Connection:

    def __cinit__(self, bint client_side=False):
        self.client_side = client_side
        self.out = OutBuf()
        self._block = OutBuf()
        self.dec = HpackDecoder()
        self.enc = HpackEncoder()
        self.local_max_concurrent = 100
        self.local_initial_window = 65536
        self.local_max_frame_size = 16384
        self.local_max_header_list_size = 65536
        self.local_header_table_size = 4096
        self.local_connection_window = 1 << 20
        self.remote_header_table_size = 4096
        self.remote_enable_push = 1
        self.remote_max_concurrent = 0xffffffffu
        self.remote_initial_window = RFC_INITIAL_WINDOW
        self.remote_max_frame_size = 16384
        self.remote_max_header_list_size = 0xffffffffu
        self.conn_send_window = RFC_INITIAL_WINDOW
        self.conn_recv_window = RFC_INITIAL_WINDOW
        self._conn_recv_pending = 0
        self._slots_cap = 16
        self._slots = <H2Stream*>PyMem_Malloc(self._slots_cap * sizeof(H2Stream))
        self._free_next = <int*>PyMem_Malloc(self._slots_cap * sizeof(int))
        self._map_cap = 64
        self._map_keys = <uint32_t*>PyMem_Malloc(self._map_cap * sizeof(uint32_t))
        self._map_vals = <int*>PyMem_Malloc(self._map_cap * sizeof(int))
        self._hb_cap = 4096
        self._hb = <char*>PyMem_Malloc(self._hb_cap)
        self._events_cap = 64
        self.events = <H2Event*>PyMem_Malloc(self._events_cap * sizeof(H2Event))
        if (self._slots == NULL or self._free_next == NULL or self._map_keys == NULL
                or self._map_vals == NULL or self._hb == NULL or self.events == NULL):
            raise MemoryError()
        self._nslots = 0
        self._free_head = -1
        for i in range(self._map_cap):
            self._map_keys[i] = 0
        for i in range(128):
            self._closed_ids[i] = 0
            self._closed_how[i] = 0
        self._closed_pos = 0
        self._next_local_sid = 1 if client_side else 2
        self.state = CS_SETTINGS if client_side else CS_PREFACE
        self.max_rapid_resets = 200
        self.rapid_reset_window = 30.0
        self.max_pending_control = 1000
        self.max_empty_frames = 100
        self.max_header_block = 65536 + 1024
        self.error_reason = None

    def __dealloc__(self):
        PyMem_Free(self._slots)
        PyMem_Free(self._free_next)
        PyMem_Free(self._map_keys)
        PyMem_Free(self._map_vals)
        PyMem_Free(self._hb)
        PyMem_Free(self.events)

    # -- streams: slots + map ---------------------------------------------

    cdef H2Stream* get_stream(self, uint32_t sid) noexcept:
        cdef uint32_t mask = self._map_cap - 1
        cdef uint32_t i = _mix(sid) & mask
        if sid == 0:
            return NULL
        while self._map_keys[i]:
            if self._map_keys[i] == sid:
                return &self._slots[self._map_vals[i]]
            i = (i + 1) & mask
        return NULL

    cdef H2Stream* _new_stream(self, uint32_t sid) except NULL:
        cdef int slot, k, old_cap
        cdef uint32_t mask, i
        cdef uint32_t* okeys
        cdef int* ovals
        cdef H2Stream* st
        if (self.active_peer + self.active_local + 1) * 2 > self._map_cap:
            okeys = self._map_keys
            ovals = self._map_vals
            old_cap = self._map_cap
            self._map_cap *= 2
            self._map_keys = <uint32_t*>PyMem_Malloc(self._map_cap * sizeof(uint32_t))
            self._map_vals = <int*>PyMem_Malloc(self._map_cap * sizeof(int))
            if self._map_keys == NULL or self._map_vals == NULL:
                raise MemoryError()
            mask = self._map_cap - 1
            for k in range(self._map_cap):
                self._map_keys[k] = 0
            for k in range(old_cap):
                if okeys[k]:
                    i = _mix(okeys[k]) & mask
                    while self._map_keys[i]:
                        i = (i + 1) & mask
                    self._map_keys[i] = okeys[k]
                    self._map_vals[i] = ovals[k]
            PyMem_Free(okeys)
            PyMem_Free(ovals)
        if self._free_head >= 0:
            slot = self._free_head
            self._free_head = self._free_next[slot]
        else:
            if self._nslots == self._slots_cap:
                st = <H2Stream*>PyMem_Realloc(self._slots, 2 * self._slots_cap * sizeof(H2Stream))
                if st == NULL:
                    raise MemoryError()
                self._slots = st
                ovals = <int*>PyMem_Realloc(self._free_next, 2 * self._slots_cap * sizeof(int))
                if ovals == NULL:
                    raise MemoryError()
                self._free_next = ovals
                self._slots_cap *= 2
            slot = self._nslots
            self._nslots += 1
        mask = self._map_cap - 1
        i = _mix(sid) & mask
        while self._map_keys[i]:
            i = (i + 1) & mask
        self._map_keys[i] = sid
        self._map_vals[i] = slot
        st = &self._slots[slot]
        st.id = sid
        st.state = SS_IDLE
        st.sflags = 0
        st.send_window = self.remote_initial_window
        st.recv_window = self.local_initial_window
        st.recv_pending = 0
        if self._is_peer_sid(sid):
            self.active_peer += 1
        else:
            self.active_local += 1
            st.sflags = SF_LOCAL
        return st

    cdef bint _is_peer_sid(self, uint32_t sid) noexcept:
        return (sid & 1) == (0 if self.client_side else 1)

    cdef void _close_stream(self, H2Stream* st, uint8_t how) noexcept:
        cdef uint32_t mask = self._map_cap - 1
        cdef uint32_t sid = st.id, i, j, k
        cdef int slot = <int>(st - self._slots)
        i = _mix(sid) & mask
        while self._map_keys[i] != sid:
            i = (i + 1) & mask
        # backward-shift deletion keeps probe chains intact without tombstones
        j = i
        while True:
            j = (j + 1) & mask
            if self._map_keys[j] == 0:
                break
            k = _mix(self._map_keys[j]) & mask
            if (j > i and (k <= i or k > j)) or (j < i and (k <= i and k > j)):
                self._map_keys[i] = self._map_keys[j]
                self._map_vals[i] = self._map_vals[j]
                i = j
        self._map_keys[i] = 0
        if st.sflags & SF_LOCAL:
            self.active_local -= 1
        else:
            self.active_peer -= 1
        st.id = 0
        st.state = SS_CLOSED
        self._free_next[slot] = self._free_head
        self._free_head = slot
        self._closed_ids[self._closed_pos] = sid
        self._closed_how[self._closed_pos] = how
        self._closed_pos = (self._closed_pos + 1) & 127

    cdef int _closed_how_of(self, uint32_t sid) noexcept:
        cdef int i
        for i in range(128):
            if self._closed_ids[i] == sid:
                return self._closed_how[i]
        return 0

    cdef bint _is_idle(self, uint32_t sid) noexcept:
        if self._is_peer_sid(sid):
            return sid > self.highest_peer_sid
        return sid > self.highest_local_sid

    # -- events and errors ------------------------------------------------

    cdef int _event(self, uint8_t type, uint8_t flags, uint32_t sid, uint32_t code,
                    Py_ssize_t off, Py_ssize_t ln, int64_t value) except? -1:
        cdef H2Event* e
        if self.nevents == self._events_cap:
            e = <H2Event*>PyMem_Realloc(self.events, 2 * self._events_cap * sizeof(H2Event))
            if e == NULL:
                raise MemoryError()
            self.events = e
            self._events_cap *= 2
        e = &self.events[self.nevents]
        e.type = type
        e.flags = flags
        e.stream_id = sid
        e.code = code
        e.off = off
        e.len = ln
        e.value = value
        self.nevents += 1
        return 0

    cdef int _conn_error(self, uint32_t code, str reason) except? -1:
        if self.state == CS_CLOSED:
            return -1
        write_goaway(self.out, self.highest_peer_sid, code, NULL, 0)
        self.goaway_sent = True
        self.goaway_last_sent = self.highest_peer_sid
        self.state = CS_CLOSED
        self.error_code = code
        self.error_reason = reason
        self._event(EV_CONNECTION_ERROR, EVF_LOCAL, 0, code, 0, 0, self.highest_peer_sid)
        return -1

    cdef int _stream_error(self, uint32_t sid, uint32_t code) except? -1:
        cdef H2Stream* st = self.get_stream(sid)
        write_rst_stream(self.out, sid, code)
        if st != NULL:
            self._close_stream(st, CL_RESET_LOCAL)
            self._event(EV_STREAM_RESET, EVF_LOCAL, sid, code, 0, 0, 0)
        else:
            self._closed_ids[self._closed_pos] = sid
            self._closed_how[self._closed_pos] = CL_RESET_LOCAL
            self._closed_pos = (self._closed_pos + 1) & 127
        return 0

    cdef int _control_queued(self) except? -1:
        self.pending_control += 1
        if self.pending_control > self.max_pending_control:
            return self._conn_error(H2_ENHANCE_YOUR_CALM, "SETTINGS/PING flood: too many ACKs queued")
        return 0

    cdef int _empty_frame(self) except? -1:
        self.empty_frames += 1
        if self.empty_frames > self.max_empty_frames:
            return self._conn_error(H2_ENHANCE_YOUR_CALM, "flood of empty DATA/CONTINUATION frames")
        return 0

    cdef int _credit_conn(self, int64_t n) except? -1:
        # Connection-level credit for bytes the application will never see
        # (padding, frames of reset streams): counted as consumed at once.
        cdef int64_t room = self.local_connection_window - self.conn_recv_window - self._conn_recv_pending
        if n > room:
            n = room
        if n <= 0:
            return 0
        self._conn_recv_pending += n
        if self._conn_recv_pending >= self.local_connection_window // 2:
            write_window_update(self.out, 0, <uint32_t>self._conn_recv_pending)
            self.conn_recv_window += self._conn_recv_pending
            self._conn_recv_pending = 0
        return 0

    # -- public C API -----------------------------------------------------

    cdef int initiate(self) except -1:
        cdef uint32_t pairs[12]
        cdef int n = 0
        if self.client_side:
            self.out.add(PREFACE, PREFACE_LEN)
            pairs[0] = S_ENABLE_PUSH
            pairs[1] = 0
            n = 1
        pairs[2 * n] = S_HEADER_TABLE_SIZE
        pairs[2 * n + 1] = self.local_header_table_size
        pairs[2 * n + 2] = S_MAX_CONCURRENT_STREAMS
        pairs[2 * n + 3] = self.local_max_concurrent
        pairs[2 * n + 4] = S_INITIAL_WINDOW_SIZE
        pairs[2 * n + 5] = self.local_initial_window
        pairs[2 * n + 6] = S_MAX_FRAME_SIZE
        pairs[2 * n + 7] = self.local_max_frame_size
        pairs[2 * n + 8] = S_MAX_HEADER_LIST_SIZE
        pairs[2 * n + 9] = self.local_max_header_list_size
        write_settings(self.out, pairs, n + 5, False)
        self.dec.set_table_limit(self.local_header_table_size)
        self.dec.max_header_list_size = self.local_max_header_list_size
        if self.local_connection_window > RFC_INITIAL_WINDOW:
            write_window_update(self.out, 0, <uint32_t>(self.local_connection_window - RFC_INITIAL_WINDOW))
        self.conn_recv_window = self.local_connection_window
        return 0

    cdef void flushed(self) noexcept:
        self.out.len = 0
        self.pending_control = 0

    cdef Py_ssize_t receive(self, const char* data, Py_ssize_t n) except -1:
        cdef Py_ssize_t pos = 0, r, k
        cdef H2Frame f
        self.nevents = 0
        self.dec.clear_output()
        if self.state == CS_CLOSED:
            return n
        if self.state == CS_PREFACE:
            k = n if n < PREFACE_LEN else PREFACE_LEN
            if memcmp(data, PREFACE, k) != 0:
                self._conn_error(H2_PROTOCOL_ERROR, "invalid connection preface")
                return n
            if n < PREFACE_LEN:
                return 0
            pos = PREFACE_LEN
            self.state = CS_SETTINGS
        while pos < n:
            r = parse_frame(data + pos, n - pos, self.local_max_frame_size, &f)
            if r == 0:
                break
            if r < 0:
                self._conn_error(f.error, "frame larger than SETTINGS_MAX_FRAME_SIZE")
                return n
            if self._frame(data, &f, pos) < 0 or self.state == CS_CLOSED:
                return n
            pos += r
        return pos

    cdef int _frame(self, const char* data, H2Frame* f, Py_ssize_t base) except? -1:
        cdef const char* fp = data + base
        if self.state == CS_SETTINGS:
            if f.type != FT_SETTINGS or (f.flags & FL_ACK):
                return self._conn_error(H2_PROTOCOL_ERROR, "the first frame must be SETTINGS")
            self.state = CS_OPEN
        if self._hb_active and f.type != FT_CONTINUATION:
            return self._conn_error(H2_PROTOCOL_ERROR, "header block interrupted by another frame")
        if f.error:
            if f.error_conn:
                return self._conn_error(f.error, "invalid frame")
            if f.type == FT_HEADERS:
                # still decode the block to keep the HPACK table in sync
                pass
            else:
                return self._stream_error(f.stream_id, f.error)
        if f.type == FT_DATA:
            return self._on_data(fp, f, base)
        if f.type == FT_HEADERS:
            if f.error:
                if not (f.flags & FL_END_HEADERS):
                    return self._conn_error(H2_PROTOCOL_ERROR, "invalid HEADERS priority")
                self.dec.decode(fp + f.body_off, f.body_len, &self._dummy_first, &self._dummy_count)
                return self._stream_error(f.stream_id, f.error)
            return self._on_headers_frame(fp, f)
        if f.type == FT_CONTINUATION:
            if not self._hb_active or f.stream_id != self._hb_sid:
                return self._conn_error(H2_PROTOCOL_ERROR, "CONTINUATION without a header block")
            if f.body_len == 0 and not (f.flags & FL_END_HEADERS):
                if self._empty_frame() < 0:
                    return -1
            if self._hb_len + f.body_len > self.max_header_block:
                return self._conn_error(H2_ENHANCE_YOUR_CALM, "header block too large (CONTINUATION flood)")
            self._hb_append(fp + f.body_off, f.body_len)
            if f.flags & FL_END_HEADERS:
                self._hb_active = False
                return self._on_block(self._hb_sid, self._hb_flags, self._hb, self._hb_len)
            return 0
        if f.type == FT_SETTINGS:
            return self._on_settings(fp, f)
        if f.type == FT_WINDOW_UPDATE:
            return self._on_window_update(f)
        if f.type == FT_RST_STREAM:
            return self._on_rst(f)
        if f.type == FT_PING:
            return self._on_ping(f)
        if f.type == FT_GOAWAY:
            return self._on_goaway(f, base)
        if f.type == FT_PUSH_PROMISE:
            # servers never receive pushes; our clients disable them (ENABLE_PUSH=0)
            return self._conn_error(H2_PROTOCOL_ERROR, "PUSH_PROMISE received (push is disabled)")
        # PRIORITY (deprecated by RFC 9113, validated by parse_frame) and
        # unknown frame types are ignored
        return 0

    cdef int _hb_append(self, const char* p, Py_ssize_t n) except? -1:
        cdef char* q
        cdef Py_ssize_t want = self._hb_cap
        if self._hb_len + n > self._hb_cap:
            while want < self._hb_len + n:
                want *= 2
            q = <char*>PyMem_Realloc(self._hb, want)
            if q == NULL:
                raise MemoryError()
            self._hb = q
            self._hb_cap = want
        memcpy(self._hb + self._hb_len, p, n)
        self._hb_len += n
        return 0

    cdef int _on_headers_frame(self, const char* fp, H2Frame* f) except? -1:
        if f.flags & FL_END_HEADERS:
            return self._on_block(f.stream_id, f.flags, fp + f.body_off, f.body_len)
        if f.body_len > self.max_header_block:
            return self._conn_error(H2_ENHANCE_YOUR_CALM, "header block too large")
        self._hb_active = True
        self._hb_sid = f.stream_id
        self._hb_flags = f.flags
        self._hb_len = 0
        return self._hb_append(fp + f.body_off, f.body_len)

    cdef int _on_block(self, uint32_t sid, uint8_t flags, const char* block, Py_ssize_t n) except? -1:
        cdef int first = 0, count = 0, r, kind, status = 0, nxt, how
        cdef bint es = (flags & FL_END_STREAM) != 0
        cdef H2Stream* st
        cdef uint8_t evtype
        # HPACK first, always: the table must follow the peer's even for
        # blocks we then refuse or ignore.
        r = self.dec.decode(block, n, &first, &count)
        if r == HPACK_E_COMPRESSION:
            return self._conn_error(H2_COMPRESSION_ERROR, "HPACK: " + (self.dec.error_reason or ""))
        st = self.get_stream(sid)
        if st == NULL:
            if not self._is_peer_sid(sid) or self.client_side:
                if self._is_idle(sid):
                    return self._conn_error(H2_PROTOCOL_ERROR, "HEADERS on an idle stream we did not open")
                if self._closed_how_of(sid) == CL_RESET_LOCAL:
                    return 0
                return self._conn_error(H2_STREAM_CLOSED, "HEADERS on a closed stream")
            if sid <= self.highest_peer_sid:
                how = self._closed_how_of(sid)
                if how == CL_RESET_LOCAL:
                    return 0
                if how == CL_RESET_PEER:
                    return self._stream_error(sid, H2_STREAM_CLOSED)
                if how == 0:
                    # never opened (or closed long ago): ids only go up (5.1.1)
                    return self._conn_error(H2_PROTOCOL_ERROR, "HEADERS with a stream id below the highest")
                return self._conn_error(H2_STREAM_CLOSED, "HEADERS on a closed stream")
            # a new stream from the peer
            if self.goaway_sent and sid > self.goaway_last_sent:
                self._closed_ids[self._closed_pos] = sid      # ignored (RFC 9113 6.8)
                self._closed_how[self._closed_pos] = CL_RESET_LOCAL
                self._closed_pos = (self._closed_pos + 1) & 127
                return 0
            self.highest_peer_sid = sid
            if <uint32_t>self.active_peer >= self.local_max_concurrent:
                return self._stream_error(sid, H2_REFUSED_STREAM)
            if r == HPACK_E_TOO_LARGE:
                return self._stream_error(sid, H2_ENHANCE_YOUR_CALM)
            if r == HPACK_E_MALFORMED or _check_headers(self.dec.out, self.dec.headers + first,
                                                        count, HK_REQUEST, &status) < 0:
                return self._stream_error(sid, H2_PROTOCOL_ERROR)
            st = self._new_stream(sid)
            st.state = TRANS[SS_IDLE][IN_RECV_H_ES if es else IN_RECV_H]
            st.sflags |= SF_HEADERS_RECV
            self._event(EV_REQUEST, EVF_END_STREAM if es else 0, sid, 0, first, count, 0)
            if es:
                self._event(EV_STREAM_ENDED, 0, sid, 0, 0, 0, 0)
            return 0
        nxt = TRANS[st.state][IN_RECV_H_ES if es else IN_RECV_H]
        if nxt == T_STREAM_CLOSED:
            return self._stream_error(sid, H2_STREAM_CLOSED)
        if nxt < 0:
            return self._conn_error(H2_PROTOCOL_ERROR, "HEADERS not allowed in this stream state")
        if r == HPACK_E_TOO_LARGE:
            return self._stream_error(sid, H2_ENHANCE_YOUR_CALM)
        if r == HPACK_E_MALFORMED:
            return self._stream_error(sid, H2_PROTOCOL_ERROR)
        if self.client_side and not (st.sflags & SF_FINAL_RECV):
            if _check_headers(self.dec.out, self.dec.headers + first, count, HK_RESPONSE, &status) < 0:
                return self._stream_error(sid, H2_PROTOCOL_ERROR)
            if status < 200:
                if es:
                    return self._stream_error(sid, H2_PROTOCOL_ERROR)
                evtype = EV_INFORMATIONAL
            else:
                evtype = EV_RESPONSE
                st.sflags |= SF_FINAL_RECV | SF_HEADERS_RECV
        else:
            # trailers: END_STREAM and no pseudo-headers
            if not es or _check_headers(self.dec.out, self.dec.headers + first, count,
                                        HK_TRAILERS, &status) < 0:
                return self._stream_error(sid, H2_PROTOCOL_ERROR)
            evtype = EV_TRAILERS
        st.state = nxt
        self._event(evtype, EVF_END_STREAM if es else 0, sid, <uint32_t>status, first, count, 0)
        if es:
            self._event(EV_STREAM_ENDED, 0, sid, 0, 0, 0, 0)
        if nxt == SS_CLOSED:
            self._close_stream(st, CL_NORMAL)
        return 0

    cdef int _on_data(self, const char* fp, H2Frame* f, Py_ssize_t base) except? -1:
        cdef H2Stream* st
        cdef int nxt, how
        cdef bint es = (f.flags & FL_END_STREAM) != 0
        cdef int64_t ln = f.length
        if ln > self.conn_recv_window:
            return self._conn_error(H2_FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.conn_recv_window -= ln
        st = self.get_stream(f.stream_id)
        if st == NULL:
            if self._is_idle(f.stream_id):
                return self._conn_error(H2_PROTOCOL_ERROR, "DATA on an idle stream")
            self._credit_conn(ln)
            how = self._closed_how_of(f.stream_id)
            if how == CL_RESET_LOCAL:
                return 0
            if how == CL_NORMAL:
                return self._conn_error(H2_STREAM_CLOSED, "DATA after END_STREAM")
            return self._stream_error(f.stream_id, H2_STREAM_CLOSED)
        nxt = TRANS[st.state][IN_RECV_D_ES if es else IN_RECV_D]
        if nxt < 0 or not (st.sflags & SF_HEADERS_RECV):
            self._credit_conn(ln)
            if nxt == T_STREAM_CLOSED:
                return self._stream_error(f.stream_id, H2_STREAM_CLOSED)
            return self._stream_error(f.stream_id, H2_PROTOCOL_ERROR)   # DATA before HEADERS
        if ln > st.recv_window:
            self._credit_conn(ln)
            return self._stream_error(f.stream_id, H2_FLOW_CONTROL_ERROR)
        st.recv_window -= ln
        if f.body_len == 0 and not es:
            if self._empty_frame() < 0:
                return -1
        if ln > f.body_len:
            # padding is flow controlled but never reaches the application
            self.consumed(f.stream_id, ln - f.body_len)
        if f.body_len:
            self._event(EV_DATA, EVF_END_STREAM if es else 0, f.stream_id, 0,
                        base + f.body_off, f.body_len, ln)
        if es:
            st.state = nxt
            self._event(EV_STREAM_ENDED, 0, f.stream_id, 0, 0, 0, 0)
            if nxt == SS_CLOSED:
                self._close_stream(st, CL_NORMAL)
        return 0

    cdef int _on_settings(self, const char* fp, H2Frame* f) except? -1:
        cdef const unsigned char* p = <const unsigned char*>fp + 9
        cdef uint32_t i, sid_, v
        cdef int k
        cdef uint16_t ident
        cdef int64_t delta
        cdef H2Stream* st
        if f.flags & FL_ACK:
            return self._event(EV_SETTINGS_ACKED, 0, 0, 0, 0, 0, 0)
        self.remote_settings_received = True
        i = 0
        while i < f.length:
            ident = (<uint16_t>p[i] << 8) | p[i + 1]
            v = _u32(p + i + 2)
            i += 6
            if ident == S_HEADER_TABLE_SIZE:
                self.remote_header_table_size = v
                self.enc.set_table_limit(v)
            elif ident == S_ENABLE_PUSH:
                if self.client_side and v == 1:
                    return self._conn_error(H2_PROTOCOL_ERROR, "server sent ENABLE_PUSH=1")
                self.remote_enable_push = v
            elif ident == S_MAX_CONCURRENT_STREAMS:
                self.remote_max_concurrent = v
            elif ident == S_INITIAL_WINDOW_SIZE:
                delta = <int64_t>v - <int64_t>self.remote_initial_window
                self.remote_initial_window = v
                for k in range(self._nslots):
                    st = &self._slots[k]
                    if st.id:
                        st.send_window += delta
                        if st.send_window > WINDOW_MAX:
                            return self._conn_error(H2_FLOW_CONTROL_ERROR,
                                                    "INITIAL_WINDOW_SIZE overflows a stream window")
            elif ident == S_MAX_FRAME_SIZE:
                self.remote_max_frame_size = v
            elif ident == S_MAX_HEADER_LIST_SIZE:
                self.remote_max_header_list_size = v
            self._event(EV_SETTINGS_CHANGED, 0, 0, ident, 0, 0, v)
        write_settings(self.out, NULL, 0, True)
        return self._control_queued()

    cdef int _on_window_update(self, H2Frame* f) except? -1:
        cdef H2Stream* st
        if f.stream_id == 0:
            self.conn_send_window += f.value
            if self.conn_send_window > WINDOW_MAX:
                return self._conn_error(H2_FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            return self._event(EV_WINDOW_UPDATED, 0, 0, 0, 0, 0, f.value)
        st = self.get_stream(f.stream_id)
        if st == NULL:
            if self._is_idle(f.stream_id):
                return self._conn_error(H2_PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return 0        # closed: frames may cross; ignore
        st.send_window += f.value
        if st.send_window > WINDOW_MAX:
            return self._stream_error(f.stream_id, H2_FLOW_CONTROL_ERROR)
        return self._event(EV_WINDOW_UPDATED, 0, f.stream_id, 0, 0, 0, f.value)

    cdef int _on_rst(self, H2Frame* f) except? -1:
        cdef H2Stream* st = self.get_stream(f.stream_id)
        if st == NULL:
            if self._is_idle(f.stream_id):
                return self._conn_error(H2_PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return 0
        if not self.client_side and not (st.sflags & SF_HEADERS_SENT):
            # reset before we answered: the rapid-reset pattern (CVE-2023-44487)
            if self.now - self._rr_start > self.rapid_reset_window:
                self._rr_start = self.now
                self.rapid_resets = 0
            self.rapid_resets += 1
            if self.rapid_resets > self.max_rapid_resets:
                self._close_stream(st, CL_RESET_PEER)
                return self._conn_error(H2_ENHANCE_YOUR_CALM, "rapid reset: too many streams reset early")
        self._close_stream(st, CL_RESET_PEER)
        return self._event(EV_STREAM_RESET, 0, f.stream_id, f.value, 0, 0, 0)

    cdef int _on_ping(self, H2Frame* f) except? -1:
        if f.flags & FL_ACK:
            if self._graceful == 1 and f.opaque == GRACEFUL_PING:
                # phase two: the peer has seen the first GOAWAY; every stream it
                # opened before is now known
                self._graceful = 2
                self.goaway_last_sent = self.highest_peer_sid
                write_goaway(self.out, self.highest_peer_sid, H2_NO_ERROR, NULL, 0)
            return self._event(EV_PING_ACK, 0, 0, 0, 0, 0, <int64_t>f.opaque)
        write_ping(self.out, f.opaque, True)
        self._event(EV_PING_RECEIVED, 0, 0, 0, 0, 0, <int64_t>f.opaque)
        return self._control_queued()

    cdef int _on_goaway(self, H2Frame* f, Py_ssize_t base) except? -1:
        cdef int k
        cdef H2Stream* st
        self.goaway_received = True
        self.goaway_last_received = f.last_stream_id
        self._event(EV_GOAWAY, 0, 0, f.value, base + f.body_off, f.body_len, f.last_stream_id)
        # our streams above last_stream_id were not processed: safe to retry
        for k in range(self._nslots):
            st = &self._slots[k]
            if st.id and (st.sflags & SF_LOCAL) and st.id > f.last_stream_id:
                self._event(EV_STREAM_RESET, EVF_LOCAL, st.id, H2_REFUSED_STREAM, 0, 0, 0)
                self._close_stream(st, CL_RESET_LOCAL)
        return 0

    cdef uint32_t next_stream_id(self) noexcept:
        if not self.client_side or self.goaway_received or self.state == CS_CLOSED:
            return 0
        if self._next_local_sid > SID_MASK:
            return 0
        return self._next_local_sid

    cdef int send_headers(self, uint32_t sid, const char* base, const HeaderSlice* hs,
                          int n, bint end_stream) except -1:
        cdef H2Stream* st
        cdef int nxt
        if self.state == CS_CLOSED:
            return SEND_E_CLOSED
        st = self.get_stream(sid)
        if st == NULL:
            if self._is_peer_sid(sid) or sid < self._next_local_sid or sid > SID_MASK:
                return SEND_E_NO_STREAM
            if self.goaway_received:
                return SEND_E_CLOSED
            if <uint32_t>self.active_local >= self.remote_max_concurrent:
                return SEND_E_LIMIT
            st = self._new_stream(sid)
            self.highest_local_sid = sid
            self._next_local_sid = sid + 2
        nxt = TRANS[st.state][IN_SEND_H_ES if end_stream else IN_SEND_H]
        if nxt < 0:
            return SEND_E_STATE
        self._block.clear()
        self.enc.encode(base, hs, n, self._block)
        write_header_block(self.out, sid, self._block.data, self._block.len, end_stream,
                           self.remote_max_frame_size)
        st.state = nxt
        st.sflags |= SF_HEADERS_SENT
        if nxt == SS_CLOSED:
            self._close_stream(st, CL_NORMAL)
        return SEND_OK

    cdef int64_t send_window(self, uint32_t sid) noexcept:
        cdef H2Stream* st = self.get_stream(sid)
        cdef int64_t w
        if st == NULL:
            return 0
        w = st.send_window if st.send_window < self.conn_send_window else self.conn_send_window
        return w if w > 0 else 0

    cdef Py_ssize_t send_data(self, uint32_t sid, const char* p, Py_ssize_t n,
                              bint end_stream) except -1:
        cdef H2Stream* st
        cdef int64_t avail
        cdef Py_ssize_t k, sent = 0, chunk
        if self.state == CS_CLOSED:
            return SEND_E_CLOSED
        st = self.get_stream(sid)
        if st == NULL:
            return SEND_E_NO_STREAM
        if TRANS[st.state][IN_SEND_D] < 0 or not (st.sflags & SF_HEADERS_SENT):
            return SEND_E_STATE
        avail = self.send_window(sid)
        k = n if n <= avail else <Py_ssize_t>avail
        while sent < k:
            chunk = k - sent
            if chunk > self.remote_max_frame_size:
                chunk = self.remote_max_frame_size
            write_data(self.out, sid, p + sent, chunk, end_stream and sent + chunk == n, 0)
            sent += chunk
        if n == 0 and end_stream:
            write_data(self.out, sid, p, 0, True, 0)
        st.send_window -= k
        self.conn_send_window -= k
        if end_stream and k == n:
            st.state = TRANS[st.state][IN_SEND_D_ES]
            if st.state == SS_CLOSED:
                self._close_stream(st, CL_NORMAL)
        return k

    cdef int consumed(self, uint32_t sid, int64_t n) except? -1:
        cdef H2Stream* st
        cdef int64_t room, m
        if n <= 0 or self.state == CS_CLOSED:
            return 0
        self._credit_conn(n)
        st = self.get_stream(sid)
        if st == NULL or not (st.state == SS_OPEN or st.state == SS_HALF_CLOSED_LOCAL):
            return 0        # the peer sends no more on this stream: no stream credit
        room = self.local_initial_window - st.recv_window - st.recv_pending
        m = n if n <= room else room
        if m <= 0:
            return 0
        st.recv_pending += m
        if st.recv_pending >= self.local_initial_window // 2:
            write_window_update(self.out, sid, <uint32_t>st.recv_pending)
            st.recv_window += st.recv_pending
            st.recv_pending = 0
        return 0

    cdef int reset_stream(self, uint32_t sid, uint32_t code) except -1:
        cdef H2Stream* st = self.get_stream(sid)
        if st == NULL or self.state == CS_CLOSED:
            return SEND_E_NO_STREAM
        write_rst_stream(self.out, sid, code)
        self._close_stream(st, CL_RESET_LOCAL)
        return SEND_OK

    cdef int send_ping(self, uint64_t opaque) except -1:
        if self.state == CS_CLOSED:
            return SEND_E_CLOSED
        write_ping(self.out, opaque, False)
        return SEND_OK

    cdef int goaway(self, uint32_t code, const char* debug, Py_ssize_t n) except -1:
        if self.state == CS_CLOSED:
            return SEND_E_CLOSED
        write_goaway(self.out, self.highest_peer_sid, code, debug, n)
        self.goaway_sent = True
        self.goaway_last_sent = self.highest_peer_sid
        if code != H2_NO_ERROR:
            self.state = CS_CLOSED
            self.error_code = code
        return SEND_OK

    cdef int start_graceful_shutdown(self) except -1:
        if self.state == CS_CLOSED or self.goaway_sent:
            return SEND_E_CLOSED
        write_goaway(self.out, SID_MASK, H2_NO_ERROR, NULL, 0)
        write_ping(self.out, GRACEFUL_PING, False)
        self.goaway_sent = True
        self.goaway_last_sent = SID_MASK
        self._graceful = 1
        return SEND_OK


# ---------------------------------------------------------------------------
# Python wrappers (tests, tools): frames and an h2-like connection.

ERROR_CODES = {
    "NO_ERROR": H2_NO_ERROR, "PROTOCOL_ERROR": H2_PROTOCOL_ERROR,
    "INTERNAL_ERROR": H2_INTERNAL_ERROR, "FLOW_CONTROL_ERROR": H2_FLOW_CONTROL_ERROR,
    "SETTINGS_TIMEOUT": H2_SETTINGS_TIMEOUT, "STREAM_CLOSED": H2_STREAM_CLOSED,
    "FRAME_SIZE_ERROR": H2_FRAME_SIZE_ERROR, "REFUSED_STREAM": H2_REFUSED_STREAM,
    "CANCEL": H2_CANCEL, "COMPRESSION_ERROR": H2_COMPRESSION_ERROR,
    "CONNECT_ERROR": H2_CONNECT_ERROR, "ENHANCE_YOUR_CALM": H2_ENHANCE_YOUR_CALM,
}

Frame = namedtuple("Frame", "type flags stream_id length body value last_stream_id "
                            "opaque weight exclusive error error_conn")


def parse_frames(bytes data, uint32_t max_frame_size=16384):
    """-> (frames, consumed, error): every complete frame of data, stopping at
    the first invalid one (error = (code, is_connection_error) or None)."""
    cdef const char* p = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), pos = 0, r
    cdef H2Frame f
    frames = []
    while pos < n:
        r = parse_frame(p + pos, n - pos, max_frame_size, &f)
        if r == 0:
            break
        if r < 0 or f.error:
            return frames, pos, (f.error, bool(f.error_conn))
        frames.append(Frame(f.type, f.flags, f.stream_id, f.length,
                            p[pos + f.body_off:pos + f.body_off + f.body_len],
                            f.value, f.last_stream_id, f.opaque, f.weight,
                            bool(f.exclusive), 0, False))
        pos += r
    return frames, pos, None


def count_frames(bytes data, Py_ssize_t loops=1, uint32_t max_frame_size=16384):
    """Parse every frame of data `loops` times in C (benchmarks); returns
    the number of frames of one pass."""
    cdef const char* p = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), pos, r, k, count = 0
    cdef H2Frame f
    for k in range(loops):
        pos = 0
        count = 0
        while pos < n:
            r = parse_frame(p + pos, n - pos, max_frame_size, &f)
            if r <= 0:
                break
            pos += r
            count += 1
    return count


def frame_data(uint32_t sid, bytes data, bint end_stream=False, int pad=0):
    cdef OutBuf o = OutBuf()
    write_data(o, sid, data, len(data), end_stream, <uint8_t>pad)
    return o.take()


def frame_headers(uint32_t sid, bytes block, bint end_stream=False, uint32_t max_frame_size=16384):
    cdef OutBuf o = OutBuf()
    write_header_block(o, sid, block, len(block), end_stream, max_frame_size)
    return o.take()


def frame_priority(uint32_t sid, uint32_t dep, int weight, bint exclusive=False):
    cdef OutBuf o = OutBuf()
    write_priority(o, sid, dep, <uint8_t>weight, exclusive)
    return o.take()


def frame_rst_stream(uint32_t sid, uint32_t code):
    cdef OutBuf o = OutBuf()
    write_rst_stream(o, sid, code)
    return o.take()


def frame_settings(settings=(), bint ack=False):
    cdef OutBuf o = OutBuf()
    cdef uint32_t pairs[64]
    cdef int i = 0
    items = list(dict(settings).items()) if not isinstance(settings, (list, tuple)) else list(settings)
    for ident, value in items[:32]:
        pairs[2 * i] = ident
        pairs[2 * i + 1] = value
        i += 1
    write_settings(o, pairs, i, ack)
    return o.take()


def frame_push_promise(uint32_t sid, uint32_t promised, bytes block):
    cdef OutBuf o = OutBuf()
    write_push_promise(o, sid, promised, block, len(block))
    return o.take()


def frame_ping(bytes opaque, bint ack=False):
    cdef OutBuf o = OutBuf()
    write_ping(o, int.from_bytes(opaque, "big"), ack)
    return o.take()


def frame_goaway(uint32_t last_sid, uint32_t code, bytes debug=b""):
    cdef OutBuf o = OutBuf()
    write_goaway(o, last_sid, code, debug, len(debug))
    return o.take()


def frame_window_update(uint32_t sid, uint32_t increment):
    cdef OutBuf o = OutBuf()
    write_window_update(o, sid, increment)
    return o.take()


RequestReceived = namedtuple("RequestReceived", "stream_id headers")
ResponseReceived = namedtuple("ResponseReceived", "stream_id headers")
InformationalResponseReceived = namedtuple("InformationalResponseReceived", "stream_id headers")
TrailersReceived = namedtuple("TrailersReceived", "stream_id headers")
DataReceived = namedtuple("DataReceived", "stream_id data flow_controlled_length")
StreamEnded = namedtuple("StreamEnded", "stream_id")
StreamReset = namedtuple("StreamReset", "stream_id error_code remote")
WindowUpdated = namedtuple("WindowUpdated", "stream_id delta")
RemoteSettingsChanged = namedtuple("RemoteSettingsChanged", "setting value")
SettingsAcknowledged = namedtuple("SettingsAcknowledged", "")
PingReceived = namedtuple("PingReceived", "ping_data")
PingAckReceived = namedtuple("PingAckReceived", "ping_data")
ConnectionTerminated = namedtuple("ConnectionTerminated",
                                  "error_code last_stream_id additional_data remote")


class H2Error(Exception):
    """A send the stream or connection state does not allow."""


_SEND_ERRORS = {
    SEND_E_STATE: "the stream state does not allow this",
    SEND_E_CLOSED: "the connection is closed or going away",
    SEND_E_LIMIT: "the peer's MAX_CONCURRENT_STREAMS is reached",
    SEND_E_NO_STREAM: "no such stream",
}


cdef _check(Py_ssize_t r):
    if r < 0:
        raise H2Error(_SEND_ERRORS.get(r, r))
    return r


cdef class Connection:
    """h2-like sans-IO connection over H2Connection (one Python object per
    event; the proxy uses H2Connection's C API and event array instead)."""

    cdef readonly H2Connection conn
    cdef bytearray _buf
    cdef list _events

    def __init__(self, bint client_side=False, max_concurrent_streams=None,
                 initial_window_size=None, connection_window=None,
                 max_header_list_size=None, max_frame_size=None):
        self.conn = H2Connection(client_side)
        if max_concurrent_streams is not None:
            self.conn.local_max_concurrent = max_concurrent_streams
        if initial_window_size is not None:
            self.conn.local_initial_window = initial_window_size
        if connection_window is not None:
            self.conn.local_connection_window = connection_window
        if max_header_list_size is not None:
            self.conn.local_max_header_list_size = max_header_list_size
        if max_frame_size is not None:
            self.conn.local_max_frame_size = max_frame_size
        self._buf = bytearray()
        self._events = []

    def initiate_connection(self):
        self.conn.initiate()

    def data_to_send(self):
        cdef bytes b = self.conn.out.take()
        self.conn.flushed()
        return b

    def events(self):
        """The events of the last receive_data() call."""
        return self._events

    def receive_data(self, data, now=None):
        import time
        cdef H2Connection c = self.conn
        cdef Py_ssize_t used, i
        cdef const char* base
        cdef H2Event* e
        c.now = time.monotonic() if now is None else now
        self._buf += data
        base = self._buf
        used = c.receive(base, len(self._buf))
        events = []
        for i in range(c.nevents):
            e = &c.events[i]
            t = e.type
            if t == EV_REQUEST:
                events.append(RequestReceived(e.stream_id, self._headers(e)))
            elif t == EV_RESPONSE:
                events.append(ResponseReceived(e.stream_id, self._headers(e)))
            elif t == EV_INFORMATIONAL:
                events.append(InformationalResponseReceived(e.stream_id, self._headers(e)))
            elif t == EV_TRAILERS:
                events.append(TrailersReceived(e.stream_id, self._headers(e)))
            elif t == EV_DATA:
                events.append(DataReceived(e.stream_id, bytes(self._buf[e.off:e.off + e.len]), e.value))
            elif t == EV_STREAM_ENDED:
                events.append(StreamEnded(e.stream_id))
            elif t == EV_STREAM_RESET:
                events.append(StreamReset(e.stream_id, e.code, not (e.flags & EVF_LOCAL)))
            elif t == EV_WINDOW_UPDATED:
                events.append(WindowUpdated(e.stream_id, e.value))
            elif t == EV_SETTINGS_CHANGED:
                events.append(RemoteSettingsChanged(e.code, e.value))
            elif t == EV_SETTINGS_ACKED:
                events.append(SettingsAcknowledged())
            elif t == EV_PING_RECEIVED:
                events.append(PingReceived((<uint64_t>e.value).to_bytes(8, "big")))
            elif t == EV_PING_ACK:
                events.append(PingAckReceived((<uint64_t>e.value).to_bytes(8, "big")))
            elif t == EV_GOAWAY:
                events.append(ConnectionTerminated(e.code, e.value, bytes(self._buf[e.off:e.off + e.len]), True))
            elif t == EV_CONNECTION_ERROR:
                events.append(ConnectionTerminated(e.code, e.value, c.error_reason, False))
        del self._buf[:used]
        self._events = events
        return events

    cdef list _headers(self, H2Event* e):
        cdef HpackDecoder d = self.conn.dec
        cdef HeaderSlice* h
        cdef Py_ssize_t i
        out = []
        for i in range(e.off, e.off + e.len):
            h = &d.headers[i]
            out.append((PyBytes_FromStringAndSize(d.out + h.name_off, h.name_len),
                        PyBytes_FromStringAndSize(d.out + h.value_off, h.value_len)))
        return out

    def get_next_available_stream_id(self):
        cdef uint32_t sid = self.conn.next_stream_id()
        if sid == 0:
            raise H2Error("no stream id available")
        return sid

    def send_headers(self, uint32_t stream_id, headers, bint end_stream=False):
        cdef PyHeaders h = PyHeaders(headers)
        _check(self.conn.send_headers(stream_id, h.buf, h.hs, h.n, end_stream))

    def send_data(self, uint32_t stream_id, bytes data, bint end_stream=False):
        """Sends what the windows allow; returns the number of bytes sent."""
        return _check(self.conn.send_data(stream_id, data, len(data), end_stream))

    def end_stream(self, uint32_t stream_id):
        _check(self.conn.send_data(stream_id, b"", 0, True))

    def send_window(self, uint32_t stream_id):
        return self.conn.send_window(stream_id)

    def consumed(self, uint32_t stream_id, int64_t n):
        self.conn.consumed(stream_id, n)

    def reset_stream(self, uint32_t stream_id, uint32_t error_code=H2_CANCEL):
        _check(self.conn.reset_stream(stream_id, error_code))

    def ping(self, bytes opaque):
        _check(self.conn.send_ping(int.from_bytes(opaque, "big")))

    def close_connection(self, uint32_t error_code=0, bytes additional_data=b""):
        _check(self.conn.goaway(error_code, additional_data, len(additional_data)))

    def start_graceful_shutdown(self):
        _check(self.conn.start_graceful_shutdown())

    def stream_state(self, uint32_t stream_id):
        """'open', 'half_closed_local', 'half_closed_remote' or 'closed'."""
        cdef H2Stream* st = self.conn.get_stream(stream_id)
        if st == NULL:
            return "idle" if self.conn._is_idle(stream_id) else "closed"
        return ("idle", "open", "half_closed_local", "half_closed_remote", "closed")[st.state]

    def stream_windows(self, uint32_t stream_id):
        """(send_window, recv_window) of a live stream."""
        cdef H2Stream* st = self.conn.get_stream(stream_id)
        if st == NULL:
            raise KeyError(stream_id)
        return st.send_window, st.recv_window

    @property
    def open_streams(self):
        return self.conn.active_peer + self.conn.active_local

    @property
    def closed(self):
        return self.conn.state == CS_CLOSED
