# HTTP/2 codec (RFC 9113): frame layer and a sans-IO connection state machine.
#
# parse_frame() reads one frame from a contiguous buffer owned by the caller
# (the house pull-parser contract: complete frames only, results as offsets).
# The write_* serialisers append frames to an OutBuf. H2Connection (client or
# server side) is the h2-like state machine: receive() consumes all complete
# frames of a buffer and fills a compact C event array; everything to write
# is appended to `out` (one transport.write per batch). No Python object is
# made per frame, header or event on this path.

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from fastmesh._headers cimport HeaderSlice
from fastmesh._buffers cimport OutBuf
from fastmesh._hpack cimport HpackDecoder, HpackEncoder

cdef enum:
    # frame types
    FT_DATA = 0
    FT_HEADERS = 1
    FT_PRIORITY = 2
    FT_RST_STREAM = 3
    FT_SETTINGS = 4
    FT_PUSH_PROMISE = 5
    FT_PING = 6
    FT_GOAWAY = 7
    FT_WINDOW_UPDATE = 8
    FT_CONTINUATION = 9
    # flags
    FL_END_STREAM = 0x1
    FL_ACK = 0x1
    FL_END_HEADERS = 0x4
    FL_PADDED = 0x8
    FL_PRIORITY = 0x20
    # error codes (RFC 9113 7)
    H2_NO_ERROR = 0
    H2_PROTOCOL_ERROR = 1
    H2_INTERNAL_ERROR = 2
    H2_FLOW_CONTROL_ERROR = 3
    H2_SETTINGS_TIMEOUT = 4
    H2_STREAM_CLOSED = 5
    H2_FRAME_SIZE_ERROR = 6
    H2_REFUSED_STREAM = 7
    H2_CANCEL = 8
    H2_COMPRESSION_ERROR = 9
    H2_CONNECT_ERROR = 10
    H2_ENHANCE_YOUR_CALM = 11
    # settings
    S_HEADER_TABLE_SIZE = 1
    S_ENABLE_PUSH = 2
    S_MAX_CONCURRENT_STREAMS = 3
    S_INITIAL_WINDOW_SIZE = 4
    S_MAX_FRAME_SIZE = 5
    S_MAX_HEADER_LIST_SIZE = 6
    S_ENABLE_CONNECT_PROTOCOL = 8

cdef struct H2Frame:
    uint8_t type
    uint8_t flags
    uint32_t stream_id
    uint32_t length          # payload length (what DATA costs in flow control)
    Py_ssize_t body_off      # from the frame start: DATA data, block fragment of
    Py_ssize_t body_len      # HEADERS/PUSH_PROMISE/CONTINUATION (padding and
                             # priority skipped), SETTINGS entries, GOAWAY debug
    uint32_t value           # RST_STREAM/GOAWAY error code, WINDOW_UPDATE
                             # increment, PRIORITY dependency, promised stream id
    uint32_t last_stream_id  # GOAWAY
    uint64_t opaque          # PING (big-endian value of the 8 bytes)
    uint8_t weight
    bint exclusive
    uint32_t error           # != 0: the frame breaks RFC 9113 (an H2_* code)
    bint error_conn          # ... as a connection error (else a stream error)

cdef Py_ssize_t parse_frame(const char* data, Py_ssize_t n, uint32_t max_frame_size,
                            H2Frame* f) noexcept nogil
    # > 0: one whole frame of that many bytes; f is set (check f.error).
    # 0: incomplete. -1: length above max_frame_size (f.error =
    # FRAME_SIZE_ERROR, connection error): the frame cannot be consumed.

cdef int write_frame_header(OutBuf out, uint32_t length, uint8_t type, uint8_t flags,
                            uint32_t sid) except -1
cdef int write_data(OutBuf out, uint32_t sid, const char* p, Py_ssize_t n,
                    bint end_stream, uint8_t pad) except -1
cdef int write_header_block(OutBuf out, uint32_t sid, const char* block, Py_ssize_t n,
                            bint end_stream, uint32_t max_frame_size) except -1
    # HEADERS + as many CONTINUATION frames as max_frame_size needs
cdef int write_priority(OutBuf out, uint32_t sid, uint32_t dep, uint8_t weight,
                        bint exclusive) except -1
cdef int write_rst_stream(OutBuf out, uint32_t sid, uint32_t code) except -1
cdef int write_settings(OutBuf out, const uint32_t* pairs, int n, bint ack) except -1
    # pairs = id0, value0, id1, value1, ...
cdef int write_push_promise(OutBuf out, uint32_t sid, uint32_t promised,
                            const char* block, Py_ssize_t n) except -1
cdef int write_ping(OutBuf out, uint64_t opaque, bint ack) except -1
cdef int write_goaway(OutBuf out, uint32_t last_sid, uint32_t code,
                      const char* debug, Py_ssize_t n) except -1
cdef int write_window_update(OutBuf out, uint32_t sid, uint32_t increment) except -1


# ---------------------------------------------------------------------------
# Connection

cdef enum:  # stream states (H2Stream.state)
    SS_IDLE = 0
    SS_OPEN = 1
    SS_HALF_CLOSED_LOCAL = 2
    SS_HALF_CLOSED_REMOTE = 3
    SS_CLOSED = 4

cdef enum:  # H2Event.type
    EV_REQUEST = 1          # server: HEADERS that opened a stream. off/len = first
                            # index/count in dec.headers (offsets into dec.out)
    EV_RESPONSE = 2         # client: final response headers; code = :status
    EV_INFORMATIONAL = 3    # client: a 1xx response; code = :status
    EV_TRAILERS = 4         # headers after the body (always END_STREAM)
    EV_DATA = 5             # off/len = the data in the receive() buffer;
                            # value = flow-controlled size (with padding)
    EV_STREAM_ENDED = 6     # the peer sent END_STREAM
    EV_STREAM_RESET = 7     # code = error code; flags EVF_LOCAL: we sent the
                            # RST_STREAM (stream error), else the peer did
    EV_WINDOW_UPDATED = 8   # stream_id 0 = connection; value = increment
    EV_SETTINGS_CHANGED = 9 # one per setting received: code = id, value
    EV_SETTINGS_ACKED = 10
    EV_PING_RECEIVED = 11   # value = opaque (the ACK is already queued)
    EV_PING_ACK = 12        # value = opaque
    EV_GOAWAY = 13          # peer GOAWAY: code, value = last stream id,
                            # off/len = debug data in the receive() buffer
    EV_CONNECTION_ERROR = 14  # we ended the connection: code, GOAWAY queued

cdef enum:
    EVF_END_STREAM = 1      # on EV_REQUEST/EV_RESPONSE/EV_DATA: END_STREAM too
    EVF_LOCAL = 2

cdef struct H2Event:
    uint8_t type
    uint8_t flags
    uint32_t stream_id
    uint32_t code
    Py_ssize_t off
    Py_ssize_t len
    int64_t value

cdef struct H2Stream:
    uint32_t id
    uint8_t state            # H2StreamState
    uint8_t sflags           # SF_* (private)
    int64_t send_window      # we may send this much more (may go < 0 after SETTINGS)
    int64_t recv_window      # the peer may send this much more
    int64_t recv_pending     # consumed by the application, not yet acknowledged

cdef enum:
    SEND_OK = 0
    SEND_E_STATE = -2        # the stream's state does not allow it
    SEND_E_CLOSED = -3       # connection closed or GOAWAY received/sent
    SEND_E_LIMIT = -4        # peer's MAX_CONCURRENT_STREAMS reached
    SEND_E_NO_STREAM = -5

cdef class H2Connection:
    cdef readonly bint client_side
    cdef public OutBuf out               # frames to write; see flushed()
    cdef public HpackDecoder dec
    cdef public HpackEncoder enc
    cdef OutBuf _block                   # scratch: encoded header block

    # local settings: announced by initiate_connection(), fixed afterwards
    cdef public uint32_t local_max_concurrent      # 100
    cdef public uint32_t local_initial_window      # 65536
    cdef public uint32_t local_max_frame_size      # 16384
    cdef public uint32_t local_max_header_list_size  # 65536
    cdef public uint32_t local_header_table_size   # 4096
    cdef public int64_t local_connection_window    # 1 MiB
    # remote settings (RFC defaults until the peer's SETTINGS)
    cdef readonly uint32_t remote_header_table_size, remote_enable_push
    cdef readonly uint32_t remote_max_concurrent, remote_initial_window
    cdef readonly uint32_t remote_max_frame_size, remote_max_header_list_size
    cdef readonly bint remote_settings_received   # the peer's first SETTINGS arrived

    # flow control (connection level)
    cdef readonly int64_t conn_send_window
    cdef readonly int64_t conn_recv_window
    cdef int64_t _conn_recv_pending

    # streams: slots + open-addressing map id -> slot
    cdef H2Stream* _slots
    cdef int _nslots, _slots_cap, _free_head
    cdef int* _free_next
    cdef uint32_t* _map_keys
    cdef int* _map_vals
    cdef int _map_cap
    cdef uint32_t _closed_ids[128]       # recently closed streams and how
    cdef uint8_t _closed_how[128]
    cdef int _closed_pos
    cdef readonly int active_peer, active_local
    cdef readonly uint32_t highest_peer_sid, highest_local_sid
    cdef uint32_t _next_local_sid

    cdef readonly int state              # CS_* (private enum)
    cdef readonly bint goaway_sent, goaway_received
    cdef readonly uint32_t goaway_last_sent, goaway_last_received
    cdef int _graceful                   # 0, 1 = first GOAWAY + PING out, 2 = done
    cdef readonly uint32_t error_code    # after a connection error
    cdef readonly str error_reason

    # header block being assembled from HEADERS + CONTINUATION
    cdef bint _hb_active
    cdef uint32_t _hb_sid
    cdef uint8_t _hb_flags
    cdef char* _hb
    cdef Py_ssize_t _hb_len, _hb_cap

    # events of the current receive() batch
    cdef H2Event* events
    cdef int nevents, _events_cap

    # protections (thresholds public, counters readonly)
    cdef public double now               # set by the caller (loop.time()) per batch
    cdef public int max_rapid_resets     # peer resets of streams we have not
    cdef public double rapid_reset_window  # answered yet: 200 per 30 s
    cdef readonly int rapid_resets
    cdef double _rr_start
    cdef public int max_pending_control  # SETTINGS/PING ACKs not yet flushed: 1000
    cdef readonly int pending_control
    cdef public int max_empty_frames     # empty DATA/CONTINUATION: 100
    cdef readonly int empty_frames
    cdef public Py_ssize_t max_header_block  # compressed HEADERS+CONTINUATION: 64 KiB + 1 KiB

    cdef int initiate(self) except -1
        # Client: preface + SETTINGS + connection WINDOW_UPDATE; server: the same
        # without the preface. Call once before anything else.
    cdef Py_ssize_t receive(self, const char* data, Py_ssize_t n) except -1
        # Consumes the complete frames at data[0:n] (server: the client preface
        # first) and returns how many bytes were consumed; the caller keeps the
        # rest and calls again with more bytes appended. Events are in
        # events[0:nevents] until the next receive(); EV_DATA/EV_GOAWAY offsets
        # point into `data`, header slices into dec.out. After a connection
        # error everything is consumed and ignored.
    cdef uint32_t next_stream_id(self) noexcept
        # Client: the id for a new request, 0 when none can be opened (GOAWAY).
    cdef int send_headers(self, uint32_t sid, const char* base, const HeaderSlice* hs,
                          int n, bint end_stream) except -1
        # Opens the stream (client, new id) or answers it; SEND_OK / SEND_E_*.
    cdef Py_ssize_t send_data(self, uint32_t sid, const char* p, Py_ssize_t n,
                              bint end_stream) except -1
        # Sends what flow control allows now (at most n) and returns that;
        # END_STREAM goes out only with the last byte. Negative: SEND_E_*.
        # A partially sent stream resumes on EV_WINDOW_UPDATED.
    cdef int64_t send_window(self, uint32_t sid) noexcept
        # Bytes that may be sent on sid right now (min of stream and connection).
    cdef int consumed(self, uint32_t sid, int64_t n) except? -1
        # The application is done with n bytes of DATA of sid: once half of a
        # window is consumed a WINDOW_UPDATE goes out (stream and connection).
        # This is how the connection follows the slow side.
    cdef int reset_stream(self, uint32_t sid, uint32_t code) except -1
    cdef int send_ping(self, uint64_t opaque) except -1
    cdef int goaway(self, uint32_t code, const char* debug, Py_ssize_t n) except -1
        # Immediate GOAWAY with the highest peer stream id processed; a code
        # other than NO_ERROR closes the connection.
    cdef int start_graceful_shutdown(self) except -1
        # GOAWAY(2^31-1) + PING; the PING ACK sends GOAWAY(last real id).
    cdef void flushed(self) noexcept
        # The caller wrote (and cleared) `out`: resets the pending-ACK count.
    cdef H2Stream* get_stream(self, uint32_t sid) noexcept

    # private
    cdef H2Stream* _new_stream(self, uint32_t sid) except NULL
    cdef void _close_stream(self, H2Stream* st, uint8_t how) noexcept
    cdef int _closed_how_of(self, uint32_t sid) noexcept
    cdef int _event(self, uint8_t type, uint8_t flags, uint32_t sid, uint32_t code,
                    Py_ssize_t off, Py_ssize_t ln, int64_t value) except? -1
    cdef int _conn_error(self, uint32_t code, str reason) except? -1
    cdef int _stream_error(self, uint32_t sid, uint32_t code) except? -1
    cdef int _frame(self, const char* fp, H2Frame* f, Py_ssize_t base) except? -1
    cdef int _on_data(self, const char* fp, H2Frame* f, Py_ssize_t base) except? -1
    cdef int _on_headers_frame(self, const char* fp, H2Frame* f) except? -1
    cdef int _on_block(self, uint32_t sid, uint8_t flags, const char* block, Py_ssize_t n) except? -1
    cdef int _on_settings(self, const char* fp, H2Frame* f) except? -1
    cdef int _on_rst(self, H2Frame* f) except? -1
    cdef int _on_window_update(self, H2Frame* f) except? -1
    cdef int _on_ping(self, H2Frame* f) except? -1
    cdef int _on_goaway(self, H2Frame* f, Py_ssize_t base) except? -1
    cdef int _control_queued(self) except? -1
    cdef int _empty_frame(self) except? -1
    cdef int _credit_conn(self, int64_t n) except? -1
    cdef bint _is_idle(self, uint32_t sid) noexcept
    cdef bint _is_peer_sid(self, uint32_t sid) noexcept
    cdef int _hb_append(self, const char* p, Py_ssize_t n) except? -1
    cdef int _dummy_first, _dummy_count
