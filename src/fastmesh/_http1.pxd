# HTTP/1.1 codec: a sans-IO pull parser over a contiguous buffer.
#
# The caller owns the bytes. parse_head() and parse_body() read from the
# pointer they are given and return how much they consumed; results are
# offsets into that memory. Nothing is copied and no Python object is made per
# header. Partial tokens are never consumed: when a head, a chunk-size line or
# the trailers are incomplete the call returns 0 and the caller appends more
# bytes after the unconsumed ones and calls again with the same start.

from libc.stdint cimport uint64_t
from fastmesh._headers cimport HeaderSlice

cdef enum:
    H1_MAX_HEADERS_HARD = 256     # capacity of the header array; the configured
                                  # max_headers is clamped to this

cdef enum H1Method:
    M_OTHER = 0
    M_GET = 1
    M_HEAD = 2
    M_POST = 3
    M_PUT = 4
    M_DELETE = 5
    M_CONNECT = 6
    M_OPTIONS = 7
    M_TRACE = 8
    M_PATCH = 9

cdef enum H1Body:
    BODY_NONE = 0       # no body follows the head
    BODY_LENGTH = 1     # exactly content_length bytes
    BODY_CHUNKED = 2    # chunked transfer coding (the only one accepted)
    BODY_EOF = 3        # responses only: body runs until the connection closes

cdef class Http1Parser:
    # --- configuration (set by the owner) ---
    cdef readonly bint is_request        # True: parses requests; False: responses
    cdef public Py_ssize_t max_head_bytes # request line + headers, default 60 KiB
    cdef public int max_headers          # default 100, clamped to H1_MAX_HEADERS_HARD

    # --- head results: valid after parse_head() > 0, offsets relative to the
    #     `data` pointer given to parse_head(), until reset() ---
    cdef public int method               # H1Method (requests)
    cdef public Py_ssize_t method_off, method_len
    cdef public Py_ssize_t target_off, target_len
    cdef public Py_ssize_t path_len      # length of target up to '?' or end
    cdef public int minor                # 0 = HTTP/1.0, 1 = HTTP/1.1
    cdef public int status               # responses
    cdef public Py_ssize_t reason_off, reason_len
    cdef public int nheaders
    cdef HeaderSlice headers[H1_MAX_HEADERS_HARD]
    cdef public int host_idx             # index of the Host header, -1 if none
    cdef public int body                 # H1Body
    cdef public uint64_t content_length  # when body == BODY_LENGTH
    cdef public bint keep_alive          # after this message the connection may be reused
    cdef public bint upgrade             # request: Connection: upgrade + Upgrade header
                                         # response: 101 Switching Protocols
    cdef public bint expect_continue     # request: Expect: 100-continue (HTTP/1.1 only)
    cdef public int hop_count            # number of headers with HF_HOP

    # --- errors: parse_* returned -1 ---
    cdef public int error_status         # 400, 431 (head too large / too many headers),
                                         # 501 (unknown transfer coding), 505 (version),
                                         # 502 for a malformed response
    cdef public str error_reason         # human readable, names the reason, e.g.
                                         # "Multiple Content-Length headers"

    # --- body state ---
    cdef public uint64_t remaining       # bytes left in the body (LENGTH) or chunk
    cdef public int chunk_state
    cdef public bint message_done        # the whole message (with trailers) has been consumed
    cdef public Py_ssize_t trailer_off   # set when the last chunk is parsed: the raw trailer
    cdef public Py_ssize_t trailer_len   # lines (each "name: value\r\n", validated), relative to
                                         # the `data` of the parse_body call that completed the
                                         # message; trailer_len == 0 when there were none
    cdef public int req_method           # responses: the method of the request answered

    # --- private resume state (added by the _http1 implementation) ---
    cdef Py_ssize_t _pos                 # head: offset of the next unparsed line
    cdef Py_ssize_t _scan                # head: where the search for the next LF resumes
    cdef int _hstate                     # head: 0 = start line next, 1 = header lines
    cdef int _seen                       # head: OR of the HF_* flags of all headers so far

    cdef void reset(self) noexcept
        # Ready for the next message on the same connection (keeps config).
    cdef void expect_response_to(self, int method) noexcept
        # Responses only: HEAD -> no body; CONNECT + 2xx -> tunnel (upgrade=True).
    cdef Py_ssize_t parse_head(self, const char* data, Py_ssize_t n) except -2
        # > 0: a complete head of that many bytes (including the blank line)
        #   was parsed; results above are set. body == BODY_NONE means the
        #   message is complete (message_done = True).
        # 0: need more bytes (and n <= max_head_bytes).
        # -1: error (error_status, error_reason set). A head larger than
        #   max_head_bytes or with more than max_headers gives 431.
        # 1xx responses other than 101 are complete heads with BODY_NONE; the
        # caller resets and parses the final response next.
    cdef Py_ssize_t parse_body(self, const char* data, Py_ssize_t n,
                               Py_ssize_t* seg_off, Py_ssize_t* seg_len) except -2
        # Consumes body framing and at most one contiguous run of body bytes.
        # Returns bytes consumed (>= 0) or -1 on error. *seg_off/*seg_len are
        # the body bytes found (seg_len may be 0). message_done is set once
        # the final byte of the message (last chunk + trailers) is consumed.
        # For BODY_EOF every byte is body; the caller ends it at close.
    cdef int scan_body(self, const char* data, Py_ssize_t n) except -2
        # Checks body bytes without consuming them (a scratch copy of the
        # body state parses them): 0 = no framing error so far, -1 = error
        # (error_status, error_reason set).
