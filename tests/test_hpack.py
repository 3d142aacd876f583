"""Tests of the HPACK codec (fastmesh._hpack).

RFC 7541 Appendix C examples (decoder output, dynamic table contents and
sizes, encoder bytes where our indexing policy agrees with the RFC's),
differential tests against the `hpack` package in both directions over
hypothesis-generated header lists and table size changes, Huffman round
trips, error cases and the limits (HPACK bomb, field count).
"""
import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmesh._hpack import (
    Decoder, Encoder, HeaderListTooLarge, HPACKError, MalformedHeader, huffman_decode_py,
    huffman_encode,
)

HPACK_NEVER_INDEX = 1 << 20

# ----------------------------------------------------------------- RFC 7541 C

REQ = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com"),
     (b"cache-control", b"no-cache")],
    [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
     (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")],
]
C3 = ["828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865",
      "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"]
C4 = ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
      "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]
REQ_TABLES = [
    ([(b":authority", b"www.example.com")], 57),
    ([(b"cache-control", b"no-cache"), (b":authority", b"www.example.com")], 110),
    ([(b"custom-key", b"custom-value"), (b"cache-control", b"no-cache"),
      (b":authority", b"www.example.com")], 164),
]
DATE1, DATE2 = b"Mon, 21 Oct 2013 20:13:21 GMT", b"Mon, 21 Oct 2013 20:13:22 GMT"
LOC = b"https://www.example.com"
COOKIE = b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
RESP = [
    [(b":status", b"302"), (b"cache-control", b"private"), (b"date", DATE1), (b"location", LOC)],
    [(b":status", b"307"), (b"cache-control", b"private"), (b"date", DATE1), (b"location", LOC)],
    [(b":status", b"200"), (b"cache-control", b"private"), (b"date", DATE2), (b"location", LOC),
     (b"content-encoding", b"gzip"), (b"set-cookie", COOKIE)],
]
C5 = ["4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d54"
      "6e1768747470733a2f2f7777772e6578616d706c652e636f6d",
      "4803333037c1c0bf",
      "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f"
      "3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076"
      "657273696f6e3d31"]
C6 = ["488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b"
      "97c8e9ae82ae43d3",
      "4883640effc1c0bf",
      "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdf"
      "cd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"]
RESP_TABLES = [
    ([(b"location", LOC), (b"date", DATE1), (b"cache-control", b"private"), (b":status", b"302")], 222),
    ([(b":status", b"307"), (b"location", LOC), (b"date", DATE1), (b"cache-control", b"private")], 222),
    ([(b"set-cookie", COOKIE), (b"content-encoding", b"gzip"), (b"date", DATE2)], 215),
]


@pytest.mark.parametrize("hexblock, headers, table, size", [
    ("400a637573746f6d2d6b65790d637573746f6d2d686561646572",
     [(b"custom-key", b"custom-header")], [(b"custom-key", b"custom-header")], 55),   # C.2.1
    ("040c2f73616d706c652f70617468", [(b":path", b"/sample/path")], [], 0),           # C.2.2
    ("100870617373776f726406736563726574", [(b"password", b"secret")], [], 0),       # C.2.3
    ("82", [(b":method", b"GET")], [], 0),                                          # C.2.4
])
def test_c2_single_representations(hexblock, headers, table, size):
    d = Decoder()
    assert d.decode(bytes.fromhex(hexblock)) == headers
    assert d.table == table and d.table_size == size
    assert hpack.Decoder().decode(bytes.fromhex(hexblock), raw=True) == headers   # oracle agrees


def test_c2_3_never_indexed_flag_is_reported():
    d = Decoder()
    [(name, value, flags)] = d.decode(bytes.fromhex("100870617373776f726406736563726574"), with_flags=True)
    assert flags & HPACK_NEVER_INDEX


@pytest.mark.parametrize("blocks, huffman", [(C3, False), (C4, True)])
def test_c3_c4_requests(blocks, huffman):
    d, e = Decoder(), Encoder(huffman=huffman)
    for block, headers, (table, size) in zip(blocks, REQ, REQ_TABLES):
        assert d.decode(bytes.fromhex(block)) == headers
        assert d.table == table and d.table_size == size
        # our indexing policy agrees with the RFC's for these: byte-exact
        assert e.encode(headers).hex() == block
        assert e.table == table and e.table_size == size


@pytest.mark.parametrize("blocks", [C5, C6])
def test_c5_c6_responses_with_eviction(blocks):
    d = Decoder()
    d.header_table_size = 256
    d.decode(bytes.fromhex("3f e1 01".replace(" ", "")))    # size update to 256 (as a peer must)
    for block, headers, (table, size) in zip(blocks, RESP, RESP_TABLES):
        assert d.decode(bytes.fromhex(block)) == headers
        assert d.table == table and d.table_size == size


def test_c5_without_size_update_uses_limit():
    # SETTINGS 256 announced before the first block: the table starts at 256
    # only once the peer says so; a decoder created with 256 accepts the
    # RFC bytes directly.
    d = Decoder()
    d.header_table_size = 256       # table max 4096 > 256: an update is now required
    with pytest.raises(HPACKError):
        d.decode(bytes.fromhex(C5[0]))


def test_responses_roundtrip_through_hpack_with_small_table():
    e = Encoder()
    e.header_table_size = 256
    hd = hpack.Decoder()
    for headers in RESP:
        assert hd.decode(e.encode(headers), raw=True) == headers
    assert hd.header_table_size == 256


# ----------------------------------------------------------------- Huffman

def test_huffman_rfc_example():
    assert huffman_encode(b"www.example.com").hex() == "f1e3c2e5f23a6ba0ab90f4ff"
    assert huffman_decode_py(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"


def test_huffman_every_byte():
    s = bytes(range(256))
    assert huffman_decode_py(huffman_encode(s)) == s


@given(st.binary(max_size=300))
def test_huffman_roundtrip(s):
    enc = huffman_encode(s)
    assert huffman_decode_py(enc) == s
    assert hpack.huffman.HuffmanEncoder(hpack.huffman_constants.REQUEST_CODES,
                                        hpack.huffman_constants.REQUEST_CODES_LENGTH).encode(s) == enc


@pytest.mark.parametrize("bad", [
    "ff",            # 8 bits of padding (> 7)
    "f1e3c2e5f23a6ba0ab90f4ffff",  # trailing byte of ones
    "fffffffc",      # EOS (30 ones) inside the string
    "00",            # '0' (00000) then 000 padding: padding must be ones
])
def test_huffman_bad_padding_or_eos(bad):
    with pytest.raises(HPACKError):
        huffman_decode_py(bytes.fromhex(bad))


# ----------------------------------------------------------------- errors

@pytest.mark.parametrize("block, why", [
    ("80", "index 0"),
    ("be", "dynamic index 62 with an empty table"),
    ("ff8080808080808001", "integer overflow / too many continuation bytes"),
    ("ff", "truncated integer"),
    ("4085", "truncated string"),
    ("400a6375", "string shorter than its length"),
    ("4088ffffffffffffffff0176", "Huffman string with EOS"),
    ("8220", "table size update after a field"),
    ("3fe21f", "table size update above the SETTINGS limit (4096)"),
])
def test_compression_errors(block, why):
    with pytest.raises(HPACKError) as ei:
        Decoder().decode(bytes.fromhex(block))
    assert not isinstance(ei.value, (HeaderListTooLarge, MalformedHeader)), why


def test_size_update_at_start_then_fields():
    d = Decoder()
    assert d.decode(bytes.fromhex("20" + "3f61" + "82")) == [(b":method", b"GET")]
    assert d.max_table_size == 128


def test_uppercase_name_is_malformed():
    with pytest.raises(MalformedHeader):
        Decoder().decode(hpack.Encoder().encode([(b"X-Upper", b"v")]))


def test_value_with_newline_is_malformed_unless_allowed():
    block = hpack.Encoder().encode([(b"x-a", b"a\r\nb")])
    with pytest.raises(MalformedHeader):
        Decoder().decode(block)
    assert Decoder(check_values=False).decode(block) == [(b"x-a", b"a\r\nb")]


def test_hpack_bomb_is_bounded_and_table_stays_in_sync():
    # One 4 KiB entry, then a block of 1000 one-byte references to it: 4 MB
    # decoded from 1 KB. Over max_header_list_size -> dropped, not stored.
    e = hpack.Encoder()
    big = [(b"x-bomb", b"a" * 4000)]
    d = Decoder()
    assert d.decode(e.encode(big)) == big
    bomb = e.encode(big * 1000)
    assert len(bomb) < 1100
    with pytest.raises(HeaderListTooLarge):
        d.decode(bomb)
    # the table is still in sync: the next block decodes
    assert d.decode(e.encode([(b"x-after", b"1")] + big)) == [(b"x-after", b"1")] + big


def test_list_size_counts_32_per_field():
    d = Decoder(max_header_list_size=100)
    e = hpack.Encoder()
    assert d.decode(e.encode([(b"a", b"x" * 67)]))        # 32 + 1 + 67 = 100
    with pytest.raises(HeaderListTooLarge):
        d.decode(e.encode([(b"a", b"x" * 68)]))


def test_max_headers():
    d = Decoder(max_headers=10)
    e = hpack.Encoder()
    assert len(d.decode(e.encode([(b"x-%d" % i, b"v") for i in range(10)]))) == 10
    with pytest.raises(HeaderListTooLarge):
        d.decode(e.encode([(b"x-%d" % i, b"v") for i in range(11)]))


def test_flags_on_decoded_names():
    d = Decoder()
    out = d.decode(hpack.Encoder().encode([(b"host", b"a"), (b"content-length", b"1"),
                                           (b"te", b"trailers"), (b"x-forwarded-for", b"1")]),
                   with_flags=True)
    assert [f & 0xffff for _, _, f in out] == [2, 4, 1024 | 1, 16]


# ----------------------------------------------------------------- encoder policy

def test_sensitive_headers_never_indexed():
    e = Encoder()
    block = e.encode([(b"authorization", b"Bearer x"), (b"cookie", b"short=1"),
                      (b"x-secret", b"s", True)])
    assert e.table == []
    out = Decoder().decode(block, with_flags=True)
    assert all(f & HPACK_NEVER_INDEX for _, _, f in out)
    assert hpack.Decoder().decode(block, raw=True) == [(b"authorization", b"Bearer x"),
                                                       (b"cookie", b"short=1"), (b"x-secret", b"s")]


def test_common_headers_indexed_and_reused():
    e = Encoder()
    hdrs = [(b":method", b"GET"), (b":authority", b"api.internal"), (b"user-agent", b"curl/8")]
    first = e.encode(hdrs)
    second = e.encode(hdrs)
    assert len(second) == 3 and len(second) < len(first)   # three one-byte indexed fields


def test_encoder_lowercases_names():
    assert hpack.Decoder().decode(Encoder().encode([(b"Content-Type", b"x")]), raw=True) == \
        [(b"content-type", b"x")]


def test_encoder_emits_min_then_final_size_update():
    e = Encoder()
    e.encode([(b"x-a", b"1")])
    e.header_table_size = 0
    e.header_table_size = 1000
    block = e.encode([(b"x-b", b"2")])
    assert block[:1] == b"\x20"                  # size 0 first
    hd = hpack.Decoder()
    hd.decode(Encoder().encode([(b"x-a", b"1")]), raw=True)
    assert hd.decode(block, raw=True) == [(b"x-b", b"2")]
    assert hd.header_table_size == 1000


# ----------------------------------------------------------------- differential

names = st.one_of(
    st.sampled_from([b":method", b":path", b":authority", b":status", b"content-type", b"accept",
                     b"user-agent", b"cookie", b"authorization", b"x-request-id", b"cache-control",
                     b"location", b"set-cookie", b"content-length", b"date"]),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20).map(str.encode),
)
values = st.one_of(st.binary(max_size=60), st.sampled_from([b"GET", b"/", b"200", b"gzip, deflate", b""]))
header_lists = st.lists(st.tuples(names, values), max_size=20)
blocks = st.lists(st.tuples(header_lists, st.one_of(st.none(), st.integers(0, 4096))),
                  min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(blocks, st.booleans())
def test_our_encoder_to_hpack_decoder(seq, huffman):
    e = Encoder(huffman=huffman)
    hd = hpack.Decoder()
    for headers, size in seq:
        if size is not None:
            e.header_table_size = size
        assert hd.decode(e.encode(headers), raw=True) == headers
        assert [tuple(x) for x in hd.header_table.dynamic_entries] == e.table


@settings(max_examples=300, deadline=None)
@given(blocks)
def test_hpack_encoder_to_our_decoder(seq):
    he = hpack.Encoder()
    d = Decoder(check_values=False, max_header_list_size=1 << 20)
    for headers, size in seq:
        if size is not None:
            he.header_table_size = size
        assert d.decode(he.encode(headers)) == headers
        assert d.table == [tuple(x) for x in he.header_table.dynamic_entries]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_blocks_never_crash_and_agree_with_hpack_on_success(block):
    d = Decoder(check_values=False, max_header_list_size=1 << 30, max_headers=1 << 20)
    try:
        ours = d.decode(block)
    except HPACKError:
        return
    try:
        theirs = hpack.Decoder().decode(block, raw=True)
    except Exception:
        # hpack is laxer in some places (e.g. no integer size cap) and
        # stricter in none we accept: a block we decode, it must decode
        raise AssertionError("fastmesh accepted a block hpack rejects")
    assert ours == theirs
