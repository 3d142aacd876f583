# Shared C-level types of the data plane: a parsed header is a set of offsets
# into the bytes it was parsed from (no Python objects per header). HTTP/1.1
# (_http1) produces these; the router (_router) reads them; HTTP/2 will
# produce the same slices over its decoded header block.

cdef struct HeaderSlice:
    Py_ssize_t name_off     # offsets are relative to the base pointer the
    Py_ssize_t name_len     # producer documents (for _http1: the `data`
    Py_ssize_t value_off    # pointer passed to parse_head)
    Py_ssize_t value_len
    int flags               # HF_* below

# Header flags, set by the codec while parsing, so later stages never compare
# names again.
cdef enum:
    HF_HOP = 1                # hop-by-hop, never forwarded as is: Connection, Keep-Alive,
                              # Proxy-Connection, Transfer-Encoding, Upgrade, TE, and every
                              # header named in a Connection header (RFC 9110 7.6.1)
    HF_HOST = 2
    HF_CONTENT_LENGTH = 4
    HF_TRANSFER_ENCODING = 8
    HF_XFF = 16               # x-forwarded-for
    HF_XFP = 32               # x-forwarded-proto
    HF_REQUEST_ID = 64        # x-request-id
    HF_EXPECT = 128
    HF_UPGRADE = 256
    HF_CONNECTION = 512
    HF_TE = 1024
    HF_KEEP_ALIVE = 2048
