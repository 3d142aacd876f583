# HPACK (RFC 7541): header compression for HTTP/2, sans-IO, in C.
#
# HpackDecoder turns one header block into HeaderSlice offsets into its own
# output arena (`out`): no Python object per header. Several blocks can be
# decoded into the same arena (one feed batch of the HTTP/2 connection):
# clear_output() starts a new batch. HpackEncoder writes a header block for a
# list of HeaderSlice (over any base pointer, e.g. an HTTP/1 head) into an
# OutBuf. Each side keeps its dynamic table: a ring of entries whose bytes
# live in one C arena (see HTable).

from libc.stdint cimport uint32_t, uint8_t
from fastmesh._headers cimport HeaderSlice
from fastmesh._buffers cimport OutBuf

cdef enum:
    HPACK_OK = 0
    HPACK_E_COMPRESSION = 1     # fatal: the table state is unknown now ->
                                # connection error COMPRESSION_ERROR
    HPACK_E_TOO_LARGE = 2       # the decoded list is over max_header_list_size
                                # (counted 32 + name + value per header, as
                                # SETTINGS_MAX_HEADER_LIST_SIZE) or has more than
                                # max_headers fields. The block was decoded to its
                                # end (table in sync), its headers were dropped.
    HPACK_E_MALFORMED = 3       # a field is not valid HTTP/2 (upper-case or
                                # non-token name, NUL/CR/LF in a value). Block
                                # decoded to its end, headers kept: stream error.

    # HeaderSlice.flags bit (beyond the HF_* flags of _headers.pxd): on encode,
    # never index this field (RFC 7541 6.2.3); on decode, it arrived as such.
    HPACK_NEVER_INDEX = 1 << 20
    HPACK_DEFAULT_TABLE_SIZE = 4096

cdef struct HEntry:
    Py_ssize_t off              # of the name in the arena; the value follows
    uint32_t name_len
    uint32_t value_len
    uint32_t name_hash

cdef struct HTable:
    # Dynamic table. Entries are a ring (`ents`, newest at `head`); their bytes
    # are appended to `arena` and compacted when the end is reached (the arena
    # is 2 * max_size, so a compaction moves at most max_size bytes once per
    # max_size bytes inserted).
    HEntry* ents
    uint32_t ent_cap
    uint32_t head               # index of the newest entry
    uint32_t count
    char* arena
    Py_ssize_t arena_cap
    Py_ssize_t wpos             # next free byte in the arena
    Py_ssize_t size             # RFC 7541 4.1 size: sum of 32 + name + value
    Py_ssize_t max_size         # current maximum (set by size updates)
    Py_ssize_t limit            # the cap max_size may take (SETTINGS value)


cdef class HpackDecoder:
    cdef HTable t
    cdef public Py_ssize_t max_header_list_size   # default 65536
    cdef public int max_headers                   # default 100 fields per block
    cdef public bint check_values                 # reject NUL/CR/LF in values (default)
    cdef bint _need_update      # our limit went below the table's max: the next
                                # block must start with a size update
    # output of the current batch: HeaderSlice offsets are relative to `out`
    # (read the pointer after decoding: the arena may move when it grows)
    cdef char* out
    cdef Py_ssize_t out_len, out_cap
    cdef HeaderSlice* headers
    cdef int nheaders, headers_cap
    cdef readonly Py_ssize_t list_size  # size of the last block (32 + len each)
    cdef readonly int error             # HPACK_E_* of the last decode
    cdef readonly str error_reason

    cdef void clear_output(self) noexcept
    cdef int set_table_limit(self, Py_ssize_t n) except -1
        # Our SETTINGS_HEADER_TABLE_SIZE (apply once the peer ACKed it).
    cdef int decode(self, const char* src, Py_ssize_t n, int* first, int* count) except -1
        # Decodes one complete header block, appending to headers[]/out.
        # Returns HPACK_OK or an HPACK_E_* code; *first/*count = the new slices.
    # private
    cdef int _reserve(self, Py_ssize_t extra) except -1
    cdef int _fail(self, str reason) except -1
    cdef Py_ssize_t _string(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos) except -2
    cdef int _grow_headers(self) except -1


cdef class HpackEncoder:
    cdef HTable t
    cdef public bint huffman            # use Huffman when it is shorter (default)
    cdef Py_ssize_t _pending_min        # size updates to emit at the next block
    cdef bint _pending                  # (RFC 7541 4.2: the smallest, then the last)
    cdef char* _scratch                 # lower-cased name
    cdef Py_ssize_t _scratch_cap

    cdef int set_table_limit(self, Py_ssize_t n) except -1
        # The peer's SETTINGS_HEADER_TABLE_SIZE; we use min(n, 4096 default cap).
    cdef int encode(self, const char* base, const HeaderSlice* hs, int n, OutBuf out) except -1
        # Appends the header block for hs[0:n] (offsets relative to base) to out.
        # Names are lower-cased. HPACK_NEVER_INDEX in flags forces a never-
        # indexed literal; authorization, proxy-authorization and cookie values
        # under 20 bytes are never indexed anyway (h2 / nghttp2 defaults).
    cdef int _string(self, const char* s, Py_ssize_t n, OutBuf out) except -1


cdef Py_ssize_t huffman_encoded_len(const unsigned char* s, Py_ssize_t n) noexcept nogil
cdef Py_ssize_t huffman_decode(const unsigned char* src, Py_ssize_t n, char* dst) noexcept nogil
    # dst needs room for n * 8 / 5 bytes. Returns bytes written, -1 on bad
    # code (EOS inside, padding > 7 bits or not all ones).


cdef class PyHeaders:
    # A Python header list [(name, value[, sensitive]), ...] (str or bytes)
    # packed into one buffer with HeaderSlice offsets into it: how the
    # Python-facing wrappers (HpackEncoder here, H2Connection in _h2) hand
    # headers to the C code.
    cdef bytearray buf
    cdef HeaderSlice* hs
    cdef int n
