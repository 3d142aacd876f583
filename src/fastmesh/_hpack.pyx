# cython: language_level=3
"""HPACK (RFC 7541) decoder and encoder of the data plane, sans-IO, in C.

The decoder writes every header of a block as a HeaderSlice (offsets into its
own output arena), validates what HTTP/2 requires of a field (RFC 9113 8.2.1:
lower-case token names, no NUL/CR/LF in values), and enforces the limits that
keep a small block from decompressing into a large one ("HPACK bomb"): the
list size counted like SETTINGS_MAX_HEADER_LIST_SIZE (32 + name + value per
field) and a field count. Over a limit the block is still decoded to its end
so that the dynamic table stays in sync with the peer's; only its headers are
dropped (HPACK_E_TOO_LARGE, a stream-level problem). Anything the decoder
cannot follow is HPACK_E_COMPRESSION (a connection error).

Huffman strings are decoded 4 bits at a time with a 256-state table built at
import from the code table (the nghttp2 technique): two lookups per byte.

`Decoder` and `Encoder` at the end are Python wrappers for tests and tools.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memcmp, memmove

from fastmesh._headers cimport (
    HeaderSlice, HF_HOP, HF_HOST, HF_CONTENT_LENGTH, HF_TRANSFER_ENCODING, HF_XFF,
    HF_XFP, HF_REQUEST_ID, HF_EXPECT, HF_UPGRADE, HF_CONNECTION, HF_TE, HF_KEEP_ALIVE,
)
from fastmesh._buffers cimport OutBuf

# RFC 7541 Appendix B: code and bit length of each symbol (256 = EOS).
_HUFFMAN_CODES = (
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7,
    0xfffffe8, 0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec,
    0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3,
    0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb,
    0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa,
    0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
    0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb, 0x3fc,
    0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62,
    0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
    0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72,
    0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22,
    0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26,
    0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7,
    0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78,
    0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc,
    0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9,
    0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf,
    0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef,
    0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde,
    0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec,
    0x1fffe0, 0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef,
    0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4, 0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1,
    0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec,
    0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed,
    0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2,
    0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5,
    0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4,
    0x3ffffeb, 0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea,
    0x7ffffeb, 0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
    0x3fffffff,
)
_HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
)

STATIC_TABLE = (
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
    (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"),
    (b":status", b"200"), (b":status", b"204"), (b":status", b"206"), (b":status", b"304"),
    (b":status", b"400"), (b":status", b"404"), (b":status", b"500"),
    (b"accept-charset", b""), (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""), (b"accept-ranges", b""), (b"accept", b""),
    (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""), (b"content-disposition", b""),
    (b"content-encoding", b""), (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""), (b"content-type", b""),
    (b"cookie", b""), (b"date", b""), (b"etag", b""), (b"expect", b""), (b"expires", b""),
    (b"from", b""), (b"host", b""), (b"if-match", b""), (b"if-modified-since", b""),
    (b"if-none-match", b""), (b"if-range", b""), (b"if-unmodified-since", b""),
    (b"last-modified", b""), (b"link", b""), (b"location", b""), (b"max-forwards", b""),
    (b"proxy-authenticate", b""), (b"proxy-authorization", b""), (b"range", b""),
    (b"referer", b""), (b"refresh", b""), (b"retry-after", b""), (b"server", b""),
    (b"set-cookie", b""), (b"strict-transport-security", b""), (b"transfer-encoding", b""),
    (b"user-agent", b""), (b"vary", b""), (b"via", b""), (b"www-authenticate", b""),
)

cdef enum:
    N_STATIC = 61
    STATIC_HASH_SLOTS = 256     # open addressing over the 52 distinct names
    ENTRY_OVERHEAD = 32         # RFC 7541 4.1
    INT_MAX_VALUE = 0x7fffffff  # integers above this are refused (no legit use)

cdef const char* S_NAME[N_STATIC + 1]
cdef const char* S_VALUE[N_STATIC + 1]
cdef uint32_t S_NLEN[N_STATIC + 1]
cdef uint32_t S_VLEN[N_STATIC + 1]
cdef uint8_t S_SLOT[STATIC_HASH_SLOTS]      # first static index with that name, 0 = empty

cdef uint32_t HUF_CODE[257]
cdef uint8_t HUF_LEN[257]

# Decoding state machine: [state][nibble] -> next state, flags, symbol.
cdef enum:
    HD_EMIT = 1
    HD_FAIL = 2
    HD_ACCEPT = 4   # the next state may end the string (padding: < 8 one bits)

cdef struct HDec:
    uint8_t next
    uint8_t flags
    uint8_t sym

cdef HDec HUF_DEC[256][16]

cdef unsigned char NAME_OK[256]     # lower-case tchar
cdef unsigned char VALUE_BAD[256]   # NUL, CR, LF


cdef inline uint32_t _hash(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    # FNV-1a
    cdef uint32_t h = 2166136261u
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 16777619u
    return h


def _init():
    cdef int i, s, bit, node, nib, k, sym, nxt
    for i in range(N_STATIC):
        S_NAME[i + 1] = STATIC_TABLE[i][0]
        S_VALUE[i + 1] = STATIC_TABLE[i][1]
        S_NLEN[i + 1] = len(STATIC_TABLE[i][0])
        S_VLEN[i + 1] = len(STATIC_TABLE[i][1])
    for i in range(STATIC_HASH_SLOTS):
        S_SLOT[i] = 0
    for i in range(1, N_STATIC + 1):
        if i > 1 and S_NLEN[i] == S_NLEN[i - 1] and memcmp(S_NAME[i], S_NAME[i - 1], S_NLEN[i]) == 0:
            continue
        s = _hash(<const unsigned char*>S_NAME[i], S_NLEN[i]) & (STATIC_HASH_SLOTS - 1)
        while S_SLOT[s]:
            s = (s + 1) & (STATIC_HASH_SLOTS - 1)
        S_SLOT[s] = i
    for i in range(257):
        HUF_CODE[i] = _HUFFMAN_CODES[i]
        HUF_LEN[i] = _HUFFMAN_LENGTHS[i]
    for i in range(256):
        NAME_OK[i] = 0
        VALUE_BAD[i] = 1 if i in (0, 10, 13) else 0
    for i in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz":
        NAME_OK[i] = 1
    # Huffman tree: internal nodes 0..255 (0 = root); children >= 0 internal,
    # < 0 leaf -(sym + 1).
    children = [[None, None]]
    depth = [0]
    ones = [True]
    for sym in range(257):
        node = 0
        for k in range(HUF_LEN[sym] - 1, -1, -1):
            bit = (HUF_CODE[sym] >> k) & 1
            if k == 0:
                children[node][bit] = -(sym + 1)
            else:
                if children[node][bit] is None:
                    children.append([None, None])
                    depth.append(depth[node] + 1)
                    ones.append(ones[node] and bit == 1)
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    assert len(children) == 256
    for s in range(256):
        for nib in range(16):
            node = s
            flags = 0
            symv = 0
            for k in range(3, -1, -1):
                bit = (nib >> k) & 1
                nxt = children[node][bit]
                if nxt < 0:
                    if nxt == -257:
                        flags |= HD_FAIL
                        break
                    flags |= HD_EMIT
                    symv = -nxt - 1
                    node = 0
                else:
                    node = nxt
            if ones[node] and depth[node] <= 7:
                flags |= HD_ACCEPT
            HUF_DEC[s][nib].next = node
            HUF_DEC[s][nib].flags = flags
            HUF_DEC[s][nib].sym = symv


_init()


# ---------------------------------------------------------------------------
# Huffman

cdef Py_ssize_t huffman_encoded_len(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef uint64_t bits = 0
    cdef Py_ssize_t i
    for i in range(n):
        bits += HUF_LEN[s[i]]
    return <Py_ssize_t>((bits + 7) >> 3)


cdef inline Py_ssize_t _huffman_encode(const unsigned char* s, Py_ssize_t n, char* dst) noexcept nogil:
    cdef uint64_t acc = 0
    cdef int nbits = 0
    cdef Py_ssize_t i, o = 0
    cdef uint8_t ln
    for i in range(n):
        ln = HUF_LEN[s[i]]
        acc = (acc << ln) | HUF_CODE[s[i]]
        nbits += ln
        while nbits >= 8:
            nbits -= 8
            dst[o] = <char>(acc >> nbits)
            o += 1
        acc &= (<uint64_t>1 << nbits) - 1
    if nbits:
        # pad with the most significant bits of EOS (all ones)
        dst[o] = <char>((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1))
        o += 1
    return o


cdef Py_ssize_t huffman_decode(const unsigned char* src, Py_ssize_t n, char* dst) noexcept nogil:
    cdef uint8_t state = 0
    cdef uint8_t flags = HD_ACCEPT
    cdef Py_ssize_t i, o = 0
    cdef const HDec* e
    for i in range(n):
        e = &HUF_DEC[state][src[i] >> 4]
        if e.flags & HD_FAIL:
            return -1
        if e.flags & HD_EMIT:
            dst[o] = <char>e.sym
            o += 1
        e = &HUF_DEC[e.next][src[i] & 15]
        if e.flags & HD_FAIL:
            return -1
        if e.flags & HD_EMIT:
            dst[o] = <char>e.sym
            o += 1
        state = e.next
        flags = e.flags
    if not (flags & HD_ACCEPT):
        return -1
    return o


# ---------------------------------------------------------------------------
# Integers (RFC 7541 5.1)

cdef inline int _dec_int(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos,
                         int prefix, uint64_t* out) noexcept nogil:
    # 0 ok, -1 truncated or too large. Refuses values > 2^31 - 1, which also
    # bounds the number of continuation bytes (no endless 0x80 padding).
    cdef uint64_t mask = (1 << prefix) - 1
    cdef uint64_t v = p[pos[0]] & mask
    cdef int shift = 0
    cdef unsigned char b
    pos[0] += 1
    if v < mask:
        out[0] = v
        return 0
    while True:
        if pos[0] >= n or shift > 28:
            return -1
        b = p[pos[0]]
        pos[0] += 1
        v += <uint64_t>(b & 0x7f) << shift
        shift += 7
        if v > INT_MAX_VALUE:
            return -1
        if not (b & 0x80):
            out[0] = v
            return 0


cdef inline void _enc_int(OutBuf out, uint64_t v, int prefix, unsigned char first) except *:
    cdef char tmp[12]
    cdef int k = 0
    cdef uint64_t mask = (1 << prefix) - 1
    if v < mask:
        tmp[0] = <char>(first | v)
        out.add(tmp, 1)
        return
    tmp[0] = <char>(first | mask)
    k = 1
    v -= mask
    while v >= 128:
        tmp[k] = <char>((v & 0x7f) | 0x80)
        k += 1
        v >>= 7
    tmp[k] = <char>v
    out.add(tmp, k + 1)


# ---------------------------------------------------------------------------
# Dynamic table

cdef int ht_init(HTable* t, Py_ssize_t limit) except -1:
    t.ent_cap = <uint32_t>(limit // ENTRY_OVERHEAD + 1)
    t.ents = <HEntry*>PyMem_Malloc(t.ent_cap * sizeof(HEntry))
    t.arena_cap = 2 * limit if limit >= 32 else 64
    t.arena = <char*>PyMem_Malloc(t.arena_cap)
    if t.ents == NULL or t.arena == NULL:
        raise MemoryError()
    t.head = t.ent_cap - 1
    t.count = 0
    t.wpos = 0
    t.size = 0
    t.max_size = limit
    t.limit = limit
    return 0


cdef void ht_free(HTable* t) noexcept:
    PyMem_Free(t.ents)
    PyMem_Free(t.arena)
    t.ents = NULL
    t.arena = NULL


cdef inline HEntry* ht_get(HTable* t, uint32_t i) noexcept nogil:
    # i = 0 is the newest entry (dynamic index 62)
    return &t.ents[(t.head + t.ent_cap - i) % t.ent_cap]


cdef inline void ht_evict_to(HTable* t, Py_ssize_t size) noexcept nogil:
    cdef HEntry* e
    while t.size > size and t.count:
        e = ht_get(t, t.count - 1)
        t.size -= ENTRY_OVERHEAD + e.name_len + e.value_len
        t.count -= 1
    if t.count == 0:
        t.wpos = 0


cdef int ht_set_limit(HTable* t, Py_ssize_t limit) except -1:
    # Storage for a table of up to `limit` bytes; the entries are kept (the
    # caller evicts through max_size / size updates).
    cdef HTable nt
    cdef uint32_t i
    cdef HEntry* e
    if limit <= t.limit:
        t.limit = limit
        return 0
    ht_init(&nt, limit)
    nt.max_size = t.max_size
    for i in range(t.count, 0, -1):
        e = ht_get(t, i - 1)
        nt.head = (nt.head + 1) % nt.ent_cap
        nt.ents[nt.head] = e[0]
        nt.ents[nt.head].off = nt.wpos
        memcpy(nt.arena + nt.wpos, t.arena + e.off, e.name_len + e.value_len)
        nt.wpos += e.name_len + e.value_len
    nt.count = t.count
    nt.size = t.size
    ht_free(t)
    t[0] = nt
    return 0


cdef void ht_add(HTable* t, const char* name, Py_ssize_t nlen, const char* value,
                 Py_ssize_t vlen, uint32_t h) noexcept nogil:
    cdef Py_ssize_t es = ENTRY_OVERHEAD + nlen + vlen, delta
    cdef uint32_t i
    cdef HEntry* e
    if es > t.max_size:
        ht_evict_to(t, 0)          # RFC 7541 4.4: an entry larger than the table empties it
        return
    ht_evict_to(t, t.max_size - es)
    if t.wpos + nlen + vlen > t.arena_cap:
        # compact: live bytes run from the oldest entry to wpos, in order
        delta = ht_get(t, t.count - 1).off if t.count else t.wpos
        memmove(t.arena, t.arena + delta, t.wpos - delta)
        t.wpos -= delta
        for i in range(t.count):
            ht_get(t, i).off -= delta
    t.head = (t.head + 1) % t.ent_cap
    e = &t.ents[t.head]
    e.off = t.wpos
    e.name_len = <uint32_t>nlen
    e.value_len = <uint32_t>vlen
    e.name_hash = h
    memcpy(t.arena + t.wpos, name, nlen)
    memcpy(t.arena + t.wpos + nlen, value, vlen)
    t.wpos += nlen + vlen
    t.count += 1
    t.size += es


cdef list ht_entries(HTable* t):
    cdef list out = []
    cdef uint32_t i
    cdef HEntry* e
    for i in range(t.count):
        e = ht_get(t, i)
        out.append((PyBytes_FromStringAndSize(t.arena + e.off, e.name_len),
                    PyBytes_FromStringAndSize(t.arena + e.off + e.name_len, e.value_len)))
    return out


cdef inline int _name_flags(const char* p, Py_ssize_t n) noexcept nogil:
    # names are lower-case here (validated)
    if n == 4:
        if memcmp(p, b"host", 4) == 0: return HF_HOST
    elif n == 14:
        if memcmp(p, b"content-length", 14) == 0: return HF_CONTENT_LENGTH
    elif n == 10:
        if memcmp(p, b"connection", 10) == 0: return HF_CONNECTION | HF_HOP
        if memcmp(p, b"keep-alive", 10) == 0: return HF_KEEP_ALIVE | HF_HOP
    elif n == 17:
        if memcmp(p, b"transfer-encoding", 17) == 0: return HF_TRANSFER_ENCODING | HF_HOP
        if memcmp(p, b"x-forwarded-proto", 17) == 0: return HF_XFP
    elif n == 2:
        if memcmp(p, b"te", 2) == 0: return HF_TE | HF_HOP
    elif n == 7:
        if memcmp(p, b"upgrade", 7) == 0: return HF_UPGRADE | HF_HOP
    elif n == 16:
        if memcmp(p, b"proxy-connection", 16) == 0: return HF_HOP
    elif n == 15:
        if memcmp(p, b"x-forwarded-for", 15) == 0: return HF_XFF
    elif n == 12:
        if memcmp(p, b"x-request-id", 12) == 0: return HF_REQUEST_ID
    elif n == 6:
        if memcmp(p, b"expect", 6) == 0: return HF_EXPECT
    return 0


# ---------------------------------------------------------------------------
# Decoder

cdef class HpackDecoder:

    def __cinit__(self):
        ht_init(&self.t, HPACK_DEFAULT_TABLE_SIZE)
        self.max_header_list_size = 65536
        self.max_headers = 100
        self.check_values = True
        self.out_cap = 4096
        self.out = <char*>PyMem_Malloc(self.out_cap)
        self.headers_cap = 32
        self.headers = <HeaderSlice*>PyMem_Malloc(self.headers_cap * sizeof(HeaderSlice))
        if self.out == NULL or self.headers == NULL:
            raise MemoryError()
        self.out_len = 0
        self.nheaders = 0
        self.error = HPACK_OK
        self.error_reason = None
        self._need_update = False

    def __dealloc__(self):
        ht_free(&self.t)
        PyMem_Free(self.out)
        PyMem_Free(self.headers)

    cdef void clear_output(self) noexcept:
        self.out_len = 0
        self.nheaders = 0

    cdef int set_table_limit(self, Py_ssize_t n) except -1:
        ht_set_limit(&self.t, n)
        if n < self.t.max_size:
            self._need_update = True
        return 0

    cdef int _reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t want
        cdef char* p
        if self.out_len + extra <= self.out_cap:
            return 0
        want = self.out_cap * 2
        while want < self.out_len + extra:
            want *= 2
        p = <char*>PyMem_Realloc(self.out, want)
        if p == NULL:
            raise MemoryError()
        self.out = p
        self.out_cap = want
        return 0

    cdef int _fail(self, str reason) except -1:
        self.error = HPACK_E_COMPRESSION
        self.error_reason = reason
        return HPACK_E_COMPRESSION

    cdef Py_ssize_t _string(self, const unsigned char* p, Py_ssize_t n,
                                   Py_ssize_t* pos) except -2:
        # Decodes a string literal to out[out_len:]; returns its length (the
        # caller advances out_len) or -1 on error.
        cdef uint64_t ln
        cdef bint huff
        cdef Py_ssize_t r
        if pos[0] >= n:
            return -1
        huff = p[pos[0]] & 0x80
        if _dec_int(p, n, pos, 7, &ln) < 0 or <Py_ssize_t>ln > n - pos[0]:
            return -1
        if huff:
            self._reserve(<Py_ssize_t>(ln * 8 // 5 + 1))
            r = huffman_decode(p + pos[0], <Py_ssize_t>ln, self.out + self.out_len)
            if r < 0:
                return -1
        else:
            self._reserve(<Py_ssize_t>ln)
            memcpy(self.out + self.out_len, p + pos[0], ln)
            r = <Py_ssize_t>ln
        pos[0] += <Py_ssize_t>ln
        return r

    cdef int decode(self, const char* src, Py_ssize_t n, int* first, int* count) except -1:
        cdef const unsigned char* p = <const unsigned char*>src
        cdef Py_ssize_t pos = 0, start_len = self.out_len, noff, nlen, voff, vlen, k
        cdef int start_n = self.nheaders, result = HPACK_OK, flags, nfields = 0
        cdef uint64_t idx
        cdef unsigned char b
        cdef bint indexing, seen_field = False, dropping = False, need_update = self._need_update
        cdef HEntry* e
        cdef HeaderSlice* hs
        cdef Py_ssize_t list_size = 0
        self.error = HPACK_OK
        self.error_reason = None
        first[0] = start_n
        count[0] = 0
        while pos < n:
            b = p[pos]
            if (b & 0xe0) == 0x20:
                # dynamic table size update (RFC 7541 6.3): only at the start
                if seen_field:
                    return self._fail("table size update after a header field")
                if _dec_int(p, n, &pos, 5, &idx) < 0:
                    return self._fail("bad integer")
                if <Py_ssize_t>idx > self.t.limit:
                    return self._fail("table size update above SETTINGS_HEADER_TABLE_SIZE")
                self.t.max_size = <Py_ssize_t>idx
                ht_evict_to(&self.t, self.t.max_size)
                need_update = False
                self._need_update = False
                continue
            if need_update:
                return self._fail("missing table size update after a SETTINGS reduction")
            seen_field = True
            self._need_update = False
            flags = 0
            noff = self.out_len
            if b & 0x80:
                # indexed field (6.1)
                if _dec_int(p, n, &pos, 7, &idx) < 0:
                    return self._fail("bad integer")
                if idx == 0:
                    return self._fail("index 0")
                if idx <= N_STATIC:
                    nlen = S_NLEN[idx]
                    vlen = S_VLEN[idx]
                    self._reserve(nlen + vlen)
                    memcpy(self.out + noff, S_NAME[idx], nlen)
                    memcpy(self.out + noff + nlen, S_VALUE[idx], vlen)
                else:
                    if idx - N_STATIC > self.t.count:
                        return self._fail("index out of range")
                    e = ht_get(&self.t, <uint32_t>(idx - N_STATIC - 1))
                    nlen = e.name_len
                    vlen = e.value_len
                    self._reserve(nlen + vlen)
                    memcpy(self.out + noff, self.t.arena + e.off, nlen + vlen)
                voff = noff + nlen
                indexing = False
            else:
                if (b & 0xc0) == 0x40:
                    indexing = True
                    k = 6
                else:
                    indexing = False
                    k = 4
                    if b & 0x10:
                        flags = HPACK_NEVER_INDEX
                if _dec_int(p, n, &pos, <int>k, &idx) < 0:
                    return self._fail("bad integer")
                if idx == 0:
                    nlen = self._string(p, n, &pos)
                    if nlen < 0:
                        return self._fail("bad name string")
                elif idx <= N_STATIC:
                    nlen = S_NLEN[idx]
                    self._reserve(nlen)
                    memcpy(self.out + noff, S_NAME[idx], nlen)
                else:
                    if idx - N_STATIC > self.t.count:
                        return self._fail("index out of range")
                    e = ht_get(&self.t, <uint32_t>(idx - N_STATIC - 1))
                    nlen = e.name_len
                    self._reserve(nlen)
                    memcpy(self.out + noff, self.t.arena + e.off, nlen)
                self.out_len += nlen
                voff = self.out_len
                vlen = self._string(p, n, &pos)
                self.out_len = noff
                if vlen < 0:
                    return self._fail("bad value string")
                if indexing:
                    ht_add(&self.t, self.out + noff, nlen, self.out + voff, vlen,
                           _hash(<const unsigned char*>self.out + noff, nlen))
            # one field decoded at out[noff:], now the limits and validation
            nfields += 1
            list_size += ENTRY_OVERHEAD + nlen + vlen
            if dropping or list_size > self.max_header_list_size or nfields > self.max_headers:
                if not dropping:
                    dropping = True
                    self.out_len = start_len
                    self.nheaders = start_n
                continue
            if nlen == 0:
                result = HPACK_E_MALFORMED
                self.error_reason = "empty header name"
            else:
                for k in range(1 if self.out[noff] == 58 else 0, nlen):   # ':' pseudo-header
                    if not NAME_OK[<unsigned char>self.out[noff + k]]:
                        result = HPACK_E_MALFORMED
                        self.error_reason = "invalid character in header name (upper-case?)"
                        break
            if self.check_values:
                for k in range(vlen):
                    if VALUE_BAD[<unsigned char>self.out[voff + k]]:
                        result = HPACK_E_MALFORMED
                        self.error_reason = "NUL, CR or LF in header value"
                        break
            if self.nheaders == self.headers_cap:
                self._grow_headers()
            hs = &self.headers[self.nheaders]
            hs.name_off = noff
            hs.name_len = nlen
            hs.value_off = voff
            hs.value_len = vlen
            hs.flags = flags | _name_flags(self.out + noff, nlen)
            self.nheaders += 1
            self.out_len = voff + vlen
        if need_update:
            return self._fail("missing table size update after a SETTINGS reduction")
        self.list_size = list_size
        if dropping:
            self.error = HPACK_E_TOO_LARGE
            self.error_reason = "header list too large" if nfields <= self.max_headers else "too many headers"
            return HPACK_E_TOO_LARGE
        count[0] = self.nheaders - start_n
        self.error = result
        return result

    cdef int _grow_headers(self) except -1:
        cdef HeaderSlice* p = <HeaderSlice*>PyMem_Realloc(
            self.headers, 2 * self.headers_cap * sizeof(HeaderSlice))
        if p == NULL:
            raise MemoryError()
        self.headers = p
        self.headers_cap *= 2
        return 0


# ---------------------------------------------------------------------------
# Encoder

cdef inline bint _never_index(const char* name, Py_ssize_t nlen, Py_ssize_t vlen) noexcept nogil:
    # h2 and nghttp2 defaults: credentials, and cookies short enough to guess
    if nlen == 13 and memcmp(name, b"authorization", 13) == 0:
        return True
    if nlen == 19 and memcmp(name, b"proxy-authorization", 19) == 0:
        return True
    if nlen == 6 and memcmp(name, b"cookie", 6) == 0 and vlen < 20:
        return True
    return False


cdef inline bint _no_index(const char* name, Py_ssize_t nlen, Py_ssize_t vlen) noexcept nogil:
    # Values that change on (almost) every message only churn the table
    # (nghttp2's list). A short :path is indexed: in a mesh most requests are
    # RPCs to a few method paths (gRPC), which then cost one byte each.
    if nlen == 5: return memcmp(name, b":path", 5) == 0 and vlen > 64
    if nlen == 3: return memcmp(name, b"age", 3) == 0
    if nlen == 14: return memcmp(name, b"content-length", 14) == 0
    if nlen == 4: return memcmp(name, b"etag", 4) == 0
    if nlen == 17: return memcmp(name, b"if-modified-since", 17) == 0
    if nlen == 13: return memcmp(name, b"if-none-match", 13) == 0
    if nlen == 8: return memcmp(name, b"location", 8) == 0
    if nlen == 10: return memcmp(name, b"set-cookie", 10) == 0
    return False


cdef class HpackEncoder:

    def __cinit__(self):
        ht_init(&self.t, HPACK_DEFAULT_TABLE_SIZE)
        self.huffman = True
        self._pending = False
        self._pending_min = HPACK_DEFAULT_TABLE_SIZE
        self._scratch_cap = 256
        self._scratch = <char*>PyMem_Malloc(self._scratch_cap)
        if self._scratch == NULL:
            raise MemoryError()

    def __dealloc__(self):
        ht_free(&self.t)
        PyMem_Free(self._scratch)

    cdef int set_table_limit(self, Py_ssize_t n) except -1:
        if n > HPACK_DEFAULT_TABLE_SIZE:
            n = HPACK_DEFAULT_TABLE_SIZE       # our memory cap; any size <= n is allowed
        if n == self.t.max_size:
            return 0
        if not self._pending or n < self._pending_min:
            self._pending_min = n
        self._pending = True
        self.t.max_size = n
        ht_evict_to(&self.t, n)
        return 0

    cdef int _string(self, const char* s, Py_ssize_t n, OutBuf out) except -1:
        cdef Py_ssize_t hl
        if self.huffman and n:
            hl = huffman_encoded_len(<const unsigned char*>s, n)
            if hl < n:
                _enc_int(out, <uint64_t>hl, 7, 0x80)
                out.reserve(hl)
                out.len += _huffman_encode(<const unsigned char*>s, n, out.data + out.len)
                return 0
        _enc_int(out, <uint64_t>n, 7, 0)
        out.add(s, n)
        return 0

    cdef int encode(self, const char* base, const HeaderSlice* hs, int n, OutBuf out) except -1:
        cdef int i, si, name_idx, full_idx
        cdef Py_ssize_t nlen, vlen, k
        cdef const char* value
        cdef const unsigned char* src
        cdef char* name
        cdef uint32_t h, j
        cdef HEntry* e
        cdef bint sensitive, index
        cdef unsigned char c
        if self._pending:
            if self._pending_min < self.t.max_size:
                _enc_int(out, <uint64_t>self._pending_min, 5, 0x20)
            _enc_int(out, <uint64_t>self.t.max_size, 5, 0x20)
            self._pending = False
        for i in range(n):
            nlen = hs[i].name_len
            vlen = hs[i].value_len
            value = base + hs[i].value_off
            if nlen > self._scratch_cap:
                PyMem_Free(self._scratch)
                self._scratch = <char*>PyMem_Malloc(nlen)
                if self._scratch == NULL:
                    self._scratch_cap = 0
                    raise MemoryError()
                self._scratch_cap = nlen
            name = self._scratch
            src = <const unsigned char*>(base + hs[i].name_off)
            for k in range(nlen):
                c = src[k]
                name[k] = <char>(c + 32 if 0x41 <= c <= 0x5a else c)
            h = _hash(<const unsigned char*>name, nlen)
            sensitive = (hs[i].flags & HPACK_NEVER_INDEX) or _never_index(name, nlen, vlen)
            name_idx = 0
            full_idx = 0
            # static table: names are grouped, values follow in index order
            si = S_SLOT[h & (STATIC_HASH_SLOTS - 1)]
            j = h & (STATIC_HASH_SLOTS - 1)
            while si:
                if S_NLEN[si] == nlen and memcmp(S_NAME[si], name, nlen) == 0:
                    name_idx = si
                    while si <= N_STATIC and S_NLEN[si] == nlen and memcmp(S_NAME[si], name, nlen) == 0:
                        if S_VLEN[si] == vlen and memcmp(S_VALUE[si], value, vlen) == 0:
                            full_idx = si
                            break
                        si += 1
                    break
                j = (j + 1) & (STATIC_HASH_SLOTS - 1)
                si = S_SLOT[j]
            if not full_idx:
                for j in range(self.t.count):
                    e = ht_get(&self.t, j)
                    if e.name_hash == h and e.name_len == nlen and \
                            memcmp(self.t.arena + e.off, name, nlen) == 0:
                        if e.value_len == vlen and memcmp(self.t.arena + e.off + nlen, value, vlen) == 0:
                            full_idx = N_STATIC + 1 + j
                            break
                        if not name_idx:
                            name_idx = N_STATIC + 1 + j
            if full_idx and not sensitive:
                _enc_int(out, <uint64_t>full_idx, 7, 0x80)
                continue
            index = (not sensitive and not _no_index(name, nlen, vlen)
                     and ENTRY_OVERHEAD + nlen + vlen <= self.t.max_size * 3 // 4)
            if index:
                _enc_int(out, <uint64_t>name_idx, 6, 0x40)
            else:
                _enc_int(out, <uint64_t>name_idx, 4, 0x10 if sensitive else 0)
            if not name_idx:
                self._string(name, nlen, out)
            self._string(value, vlen, out)
            if index:
                ht_add(&self.t, name, nlen, value, vlen, h)
        return 0


# ---------------------------------------------------------------------------
# Python wrappers (tests, tools)

class HPACKError(Exception):
    """A block the decoder cannot follow: COMPRESSION_ERROR."""


class HeaderListTooLarge(HPACKError):
    """Over max_header_list_size or max_headers (the table stayed in sync)."""


class MalformedHeader(HPACKError):
    """A field HTTP/2 does not allow (upper-case name, CR/LF/NUL in a value)."""


def huffman_encode(bytes s):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(s)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, huffman_encoded_len(<const unsigned char*>PyBytes_AS_STRING(s), n))
    _huffman_encode(<const unsigned char*>PyBytes_AS_STRING(s), n, PyBytes_AS_STRING(out))
    return out


def huffman_decode_py(bytes s):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(s)
    cdef bytearray buf = bytearray(n * 8 // 5 + 1)
    cdef Py_ssize_t r = huffman_decode(<const unsigned char*>PyBytes_AS_STRING(s), n, buf)
    if r < 0:
        raise HPACKError("invalid Huffman string")
    return bytes(buf[:r])


cdef class Decoder:
    """decode(block) -> [(name, value)]; raises HPACKError and subclasses."""

    cdef readonly HpackDecoder dec

    def __init__(self, Py_ssize_t max_header_list_size=65536, int max_headers=100,
                 bint check_values=True):
        self.dec = HpackDecoder()
        self.dec.max_header_list_size = max_header_list_size
        self.dec.max_headers = max_headers
        self.dec.check_values = check_values

    @property
    def header_table_size(self):
        """Our SETTINGS_HEADER_TABLE_SIZE (the largest size update accepted)."""
        return self.dec.t.limit

    @header_table_size.setter
    def header_table_size(self, Py_ssize_t n):
        self.dec.set_table_limit(n)

    @property
    def table(self):
        """Dynamic table entries, newest first."""
        return ht_entries(&self.dec.t)

    @property
    def table_size(self):
        return self.dec.t.size

    @property
    def max_table_size(self):
        return self.dec.t.max_size

    def decode_loops(self, bytes block, Py_ssize_t loops):
        """Decode `block` `loops` times in C (benchmarks: the proxy's path,
        no Python objects per header); returns the header count."""
        cdef int first = 0, count = 0
        cdef Py_ssize_t i
        for i in range(loops):
            self.dec.clear_output()
            if self.dec.decode(PyBytes_AS_STRING(block), PyBytes_GET_SIZE(block), &first, &count):
                raise HPACKError(self.dec.error_reason)
        return count

    def decode(self, bytes block, bint with_flags=False):
        cdef int first, count, r, i
        cdef HeaderSlice* h
        self.dec.clear_output()
        r = self.dec.decode(PyBytes_AS_STRING(block), PyBytes_GET_SIZE(block), &first, &count)
        if r == HPACK_E_COMPRESSION:
            raise HPACKError(self.dec.error_reason)
        if r == HPACK_E_TOO_LARGE:
            raise HeaderListTooLarge(self.dec.error_reason)
        if r == HPACK_E_MALFORMED:
            raise MalformedHeader(self.dec.error_reason)
        out = []
        for i in range(first, first + count):
            h = &self.dec.headers[i]
            item = (PyBytes_FromStringAndSize(self.dec.out + h.name_off, h.name_len),
                    PyBytes_FromStringAndSize(self.dec.out + h.value_off, h.value_len))
            if with_flags:
                item = item + (h.flags,)
            out.append(item)
        return out


cdef class Encoder:
    """encode([(name, value[, sensitive])]) -> bytes (one header block)."""

    cdef readonly HpackEncoder enc
    cdef OutBuf _out

    def __init__(self, bint huffman=True):
        self.enc = HpackEncoder()
        self.enc.huffman = huffman
        self._out = OutBuf()

    @property
    def header_table_size(self):
        return self.enc.t.max_size

    @header_table_size.setter
    def header_table_size(self, Py_ssize_t n):
        """The peer's SETTINGS_HEADER_TABLE_SIZE."""
        self.enc.set_table_limit(n)

    @property
    def table(self):
        return ht_entries(&self.enc.t)

    @property
    def table_size(self):
        return self.enc.t.size

    def encode(self, headers, huffman=None):
        cdef PyHeaders h = PyHeaders(headers)
        cdef bint saved = self.enc.huffman
        try:
            if huffman is not None:
                self.enc.huffman = huffman
            self._out.clear()
            self.enc.encode(h.buf, h.hs, h.n, self._out)
            return self._out.take()
        finally:
            self.enc.huffman = saved


cdef class PyHeaders:
    def __cinit__(self, headers):
        cdef int i
        self.buf = bytearray()
        self.n = len(headers)
        self.hs = <HeaderSlice*>PyMem_Malloc((self.n or 1) * sizeof(HeaderSlice))
        if self.hs == NULL:
            raise MemoryError()
        for i, item in enumerate(headers):
            name, value = item[0], item[1]
            if isinstance(name, str):
                name = name.encode("utf-8")
            if isinstance(value, str):
                value = value.encode("utf-8")
            self.hs[i].name_off = len(self.buf)
            self.hs[i].name_len = len(name)
            self.hs[i].value_off = len(self.buf) + len(name)
            self.hs[i].value_len = len(value)
            self.hs[i].flags = HPACK_NEVER_INDEX if (len(item) > 2 and item[2]) else 0
            self.buf += name
            self.buf += value

    def __dealloc__(self):
        PyMem_Free(self.hs)
