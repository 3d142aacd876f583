"""Tests of the HTTP/2 codec (fastmesh._h2).

Frame layer against hyperframe (h2's frame layer) on the same bytes, both
directions; stacks against stacks (ours <-> ours, ours <-> h2 both ways) with
bodies and trailers; flow control; state-machine violations with the error
kind the RFC names; every protection; a hypothesis fuzz of the frame parser.
"""
import hpack
import h2.config
import h2.connection
import h2.events
import pytest
from hyperframe import frame as hf
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmesh import _h2
from fastmesh._h2 import (
    ConnectionTerminated, Connection, DataReceived, PingAckReceived, RequestReceived,
    ResponseReceived, StreamEnded, StreamReset, TrailersReceived, WindowUpdated, parse_frames,
)

E = _h2.ERROR_CODES
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQ = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/upload"),
       (b":authority", b"svc.local"), (b"content-type", b"application/octet-stream")]
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"svc.local")]


# ----------------------------------------------------------------- helpers

def frames_of(data):
    frames, used, err = parse_frames(data, (1 << 24) - 1)
    assert err is None and used == len(data)
    return frames


def goaway_of(data):
    g = [f for f in frames_of(data) if f.type == 7]
    return g[-1] if g else None


def rst_of(data):
    return [(f.stream_id, f.value) for f in frames_of(data) if f.type == 3]


class RawClient:
    """A hand-driven client: frames built by our serialisers + hpack."""

    def __init__(self, server=None):
        self.enc = hpack.Encoder()
        self.server = server or Connection(client_side=False)
        self.server.initiate_connection()
        self.server.receive_data(PREFACE + _h2.frame_settings([]))
        self.out = self.server.data_to_send()

    def headers(self, sid, headers, end_stream=False, end_headers=True):
        block = self.enc.encode(headers)
        if end_headers:
            return _h2.frame_headers(sid, block, end_stream)
        return hf_bytes(hf.HeadersFrame(sid, block, flags=["END_STREAM"] if end_stream else []))

    def send(self, data):
        ev = self.server.receive_data(data)
        self.out = self.server.data_to_send()
        return ev


def hf_bytes(frame):
    return frame.serialize()


def pump(a, b, rounds=10):
    """Exchange bytes between two connections (ours or h2) until quiet; returns
    (events seen by a, events seen by b)."""
    ea, eb = [], []
    for _ in range(rounds):
        da, db = a.data_to_send(), b.data_to_send()
        if not da and not db:
            break
        if da:
            eb += b.receive_data(da)
        if db:
            ea += a.receive_data(db)
    return ea, eb


def h2conn(client_side):
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=client_side, header_encoding=None, validate_inbound_headers=True))
    c.initiate_connection()
    return c


def norm(events):
    """Comparable (kind, stream, payload) for the message-level events of
    either stack; DATA coalesced per stream."""
    out = []
    for e in events:
        name = type(e).__name__
        if name in ("RequestReceived", "ResponseReceived", "TrailersReceived"):
            out.append((name, e.stream_id, [tuple(h) for h in e.headers]))
        elif name == "DataReceived":
            if e.data:
                if out and out[-1][0] == "Data" and out[-1][1] == e.stream_id:
                    out[-1] = ("Data", e.stream_id, out[-1][2] + e.data)
                else:
                    out.append(("Data", e.stream_id, bytes(e.data)))
        elif name == "StreamEnded":
            out.append((name, e.stream_id, None))
    return out


# ----------------------------------------------------------------- frame layer

HF_FRAMES = [
    hf.DataFrame(1, b"hello", flags=["END_STREAM"]),
    hf.DataFrame(3, b"padded", flags=["PADDED"], pad_length=7),
    hf.HeadersFrame(5, b"\x82\x84", flags=["END_HEADERS"]),
    hf.HeadersFrame(5, b"\x82\x84", flags=["END_HEADERS", "PADDED", "PRIORITY"], pad_length=3,
                    depends_on=3, stream_weight=200, exclusive=True),
    hf.PriorityFrame(7, depends_on=1, stream_weight=16, exclusive=False),
    hf.RstStreamFrame(9, error_code=8),
    hf.SettingsFrame(0, settings={1: 8192, 3: 50, 4: 1 << 20, 5: 32768}),
    hf.SettingsFrame(0, flags=["ACK"]),
    hf.PushPromiseFrame(2, promised_stream_id=4, data=b"\x82", flags=["END_HEADERS"]),
    hf.PingFrame(0, opaque_data=b"12345678", flags=["ACK"]),
    hf.GoAwayFrame(0, last_stream_id=11, error_code=11, additional_data=b"calm down"),
    hf.WindowUpdateFrame(0, window_increment=1 << 30),
    hf.WindowUpdateFrame(3, window_increment=1),
    hf.ContinuationFrame(5, b"\x86", flags=["END_HEADERS"]),
]


@pytest.mark.parametrize("frame", HF_FRAMES, ids=lambda f: type(f).__name__)
def test_parse_matches_hyperframe(frame):
    raw = frame.serialize()
    [ours] = frames_of(raw)
    assert ours.stream_id == frame.stream_id and ours.length == len(raw) - 9
    assert ours.type == raw[3] and ours.flags == raw[4]
    if isinstance(frame, (hf.DataFrame, hf.HeadersFrame, hf.PushPromiseFrame, hf.ContinuationFrame)):
        assert ours.body == frame.data
    if isinstance(frame, (hf.HeadersFrame, hf.PriorityFrame)) and "PRIORITY" in (frame.flags or []) \
            or isinstance(frame, hf.PriorityFrame):
        assert (ours.value, ours.weight, ours.exclusive) == (frame.depends_on, frame.stream_weight,
                                                             frame.exclusive)
    if isinstance(frame, hf.RstStreamFrame):
        assert ours.value == frame.error_code
    if isinstance(frame, hf.PushPromiseFrame):
        assert ours.value == frame.promised_stream_id
    if isinstance(frame, hf.PingFrame):
        assert ours.opaque == int.from_bytes(frame.opaque_data, "big")
    if isinstance(frame, hf.GoAwayFrame):
        assert (ours.last_stream_id, ours.value, ours.body) == (
            frame.last_stream_id, frame.error_code, frame.additional_data)
    if isinstance(frame, hf.WindowUpdateFrame):
        assert ours.value == frame.window_increment
    if isinstance(frame, hf.SettingsFrame) and "ACK" not in frame.flags:
        got = {int.from_bytes(ours.body[i:i + 2], "big"): int.from_bytes(ours.body[i + 2:i + 6], "big")
               for i in range(0, len(ours.body), 6)}
        assert got == frame.settings


def _hf_parse(raw):
    f, length = hf.Frame.parse_frame_header(memoryview(raw[:9]))
    f.parse_body(memoryview(raw[9:9 + length]))
    return f, raw[9 + length:]


def test_serialisers_parse_in_hyperframe():
    f, rest = _hf_parse(_h2.frame_data(1, b"abc", True, pad=4))
    assert (f.data, f.pad_length, "END_STREAM" in f.flags) == (b"abc", 4, True)
    f, _ = _hf_parse(_h2.frame_priority(3, 1, 99, True))
    assert (f.depends_on, f.stream_weight, f.exclusive) == (1, 99, True)
    f, _ = _hf_parse(_h2.frame_rst_stream(3, 7))
    assert f.error_code == 7
    f, _ = _hf_parse(_h2.frame_settings([(4, 1 << 20), (3, 10)]))
    assert f.settings == {4: 1 << 20, 3: 10}
    f, _ = _hf_parse(_h2.frame_settings([], ack=True))
    assert "ACK" in f.flags
    f, _ = _hf_parse(_h2.frame_push_promise(1, 2, b"\x82"))
    assert (f.promised_stream_id, f.data) == (2, b"\x82")
    f, _ = _hf_parse(_h2.frame_ping(b"abcdefgh", ack=True))
    assert (f.opaque_data, "ACK" in f.flags) == (b"abcdefgh", True)
    f, _ = _hf_parse(_h2.frame_goaway(9, 2, b"dbg"))
    assert (f.last_stream_id, f.error_code, f.additional_data) == (9, 2, b"dbg")
    f, _ = _hf_parse(_h2.frame_window_update(0, 12345))
    assert f.window_increment == 12345


def test_header_block_split_into_continuations():
    block = bytes(range(256)) * 200        # 51200 bytes
    raw = _h2.frame_headers(1, block, True, 16384)
    parts, rest = [], raw
    while rest:
        f, rest = _hf_parse(rest)
        parts.append(f)
    assert [type(p).__name__ for p in parts] == ["HeadersFrame"] + ["ContinuationFrame"] * 3
    assert "END_HEADERS" in parts[-1].flags and "END_HEADERS" not in parts[0].flags
    assert b"".join(p.data for p in parts) == block


@pytest.mark.parametrize("raw, code, conn", [
    (b"\x00\x40\x01" + b"\x00\x00\x00\x00\x00\x01", E["FRAME_SIZE_ERROR"], True),   # 16385 > max
    (hf.DataFrame(1, b"x").serialize()[:5] + b"\x00\x00\x00\x00" + b"x", E["PROTOCOL_ERROR"], True),
    (b"\x00\x00\x02\x00\x08\x00\x00\x00\x01\x05x", E["PROTOCOL_ERROR"], True),   # pad 5 >= payload
    (b"\x00\x00\x04\x02\x00\x00\x00\x00\x01abcd", E["FRAME_SIZE_ERROR"], False),  # PRIORITY size
    (hf.PriorityFrame(3, depends_on=3).serialize(), E["PROTOCOL_ERROR"], False),  # self dependency
    (b"\x00\x00\x03\x03\x00\x00\x00\x00\x01abc", E["FRAME_SIZE_ERROR"], True),    # RST size
    (b"\x00\x00\x05\x04\x00\x00\x00\x00\x00abcde", E["FRAME_SIZE_ERROR"], True),  # SETTINGS %6
    (b"\x00\x00\x06\x04\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01", E["FRAME_SIZE_ERROR"], True),
    (hf.SettingsFrame(0, settings={2: 2}).serialize(), E["PROTOCOL_ERROR"], True),
    (hf.SettingsFrame(0, settings={4: 1 << 31}).serialize(), E["FLOW_CONTROL_ERROR"], True),
    (hf.SettingsFrame(0, settings={5: 16383}).serialize(), E["PROTOCOL_ERROR"], True),
    (hf.SettingsFrame(0, settings={5: 1 << 24}).serialize(), E["PROTOCOL_ERROR"], True),
    (b"\x00\x00\x07\x06\x00\x00\x00\x00\x001234567", E["FRAME_SIZE_ERROR"], True),  # PING size
    (b"\x00\x00\x08\x06\x00\x00\x00\x00\x0112345678", E["PROTOCOL_ERROR"], True),   # PING on stream
    (b"\x00\x00\x04\x07\x00\x00\x00\x00\x00abcd", E["FRAME_SIZE_ERROR"], True),     # GOAWAY < 8
    (b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00", E["PROTOCOL_ERROR"], True),
    (b"\x00\x00\x04\x08\x00\x00\x00\x00\x03\x00\x00\x00\x00", E["PROTOCOL_ERROR"], False),
    (b"\x00\x00\x03\x08\x00\x00\x00\x00\x03\x00\x00\x01", E["FRAME_SIZE_ERROR"], True),
    (b"\x00\x00\x01\x09\x04\x00\x00\x00\x00x", E["PROTOCOL_ERROR"], True),           # CONT on 0
])
def test_parse_errors(raw, code, conn):
    frames, used, err = parse_frames(raw)
    assert frames == [] and err == (code, conn)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([16384, 100, 20]))
def test_fuzz_parser_never_crashes(data, max_frame):
    frames, used, err = parse_frames(data, max_frame)
    assert 0 <= used <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_connection_never_crashes(data):
    for client_side in (False, True):
        c = Connection(client_side=client_side)
        c.initiate_connection()
        prefix = b"" if client_side else PREFACE
        c.receive_data(prefix + _h2.frame_settings([]) + data)
        c.data_to_send()


# ----------------------------------------------------------------- stacks

def send_body(conn, sid, body):
    for i in range(0, len(body), 16384):      # h2 wants frame-sized pieces
        assert conn.send_data(sid, body[i:i + 16384]) in (None, len(body[i:i + 16384]))


def exchange(client, server, client_is_ours, server_is_ours):
    """Two requests with bodies and trailers, two responses; returns the
    normalised events of each side."""
    ce, se = pump(client, server)
    s1 = client.get_next_available_stream_id()
    client.send_headers(s1, REQ)
    send_body(client, s1, b"x" * 40000)
    client.send_headers(s1, [(b"x-checksum", b"abc")], end_stream=True)
    s3 = client.get_next_available_stream_id()
    client.send_headers(s3, GET, end_stream=True)
    a, b = pump(client, server)
    ce += a
    se += b
    for sid in (s1, s3):
        if server_is_ours:
            for e in se:
                if isinstance(e, DataReceived):
                    server.consumed(e.stream_id, e.flow_controlled_length)
        else:
            for e in se:
                if isinstance(e, h2.events.DataReceived):
                    server.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
    for sid, body in ((s1, b"r" * 20000), (s3, b"")):
        server.send_headers(sid, [(b":status", b"200"), (b"content-type", b"text/plain")])
        send_body(server, sid, body)
        server.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
    a, b = pump(client, server)
    ce += a
    se += b
    return norm(ce), norm(se)


EXPECT_SERVER = [
    ("RequestReceived", 1, REQ), ("Data", 1, b"x" * 40000),
    ("TrailersReceived", 1, [(b"x-checksum", b"abc")]), ("StreamEnded", 1, None),
    ("RequestReceived", 3, GET), ("StreamEnded", 3, None),
]
EXPECT_CLIENT = [
    ("ResponseReceived", 1, [(b":status", b"200"), (b"content-type", b"text/plain")]),
    ("Data", 1, b"r" * 20000), ("TrailersReceived", 1, [(b"grpc-status", b"0")]),
    ("StreamEnded", 1, None),
    ("ResponseReceived", 3, [(b":status", b"200"), (b"content-type", b"text/plain")]),
    ("TrailersReceived", 3, [(b"grpc-status", b"0")]), ("StreamEnded", 3, None),
]


def ours(client_side):
    c = Connection(client_side=client_side)
    c.initiate_connection()
    return c


@pytest.mark.parametrize("client_ours, server_ours", [(True, True), (True, False), (False, True),
                                                      (False, False)])
def test_stacks_exchange_same_events(client_ours, server_ours):
    client = ours(True) if client_ours else h2conn(True)
    server = ours(False) if server_ours else h2conn(False)
    ce, se = exchange(client, server, client_ours, server_ours)
    assert se == EXPECT_SERVER
    assert ce == EXPECT_CLIENT


def test_our_server_state_after_exchange():
    client, server = h2conn(True), ours(False)
    exchange(client, server, False, True)
    assert server.open_streams == 0
    assert server.stream_state(1) == "closed" and server.stream_state(5) == "idle"


# ----------------------------------------------------------------- flow control

def test_connection_window_announced():
    s = ours(False)
    frames = frames_of(s.data_to_send())
    settings_ = frames[0].body
    got = {int.from_bytes(settings_[i:i + 2], "big"): int.from_bytes(settings_[i + 2:i + 6], "big")
           for i in range(0, len(settings_), 6)}
    assert got[3] == 100 and got[4] == 65536
    assert frames[1].type == 8 and frames[1].stream_id == 0 and frames[1].value == (1 << 20) - 65535


def test_receive_window_acknowledged_only_when_consumed():
    rc = RawClient()
    rc.send(rc.headers(1, REQ))
    rc.send(_h2.frame_data(1, b"a" * 16384) + _h2.frame_data(1, b"a" * 16384))
    assert rc.out == b""                              # nothing consumed: no WINDOW_UPDATE
    assert rc.server.stream_windows(1)[1] == 65536 - 32768
    rc.server.consumed(1, 16384)                      # below half of the window
    assert rc.server.data_to_send() == b""
    rc.server.consumed(1, 16384)
    wu = [(f.stream_id, f.value) for f in frames_of(rc.server.data_to_send()) if f.type == 8]
    assert wu == [(1, 32768)]                         # stream; the connection waits for 512 KiB
    assert rc.server.stream_windows(1)[1] == 65536


def test_over_window_is_flow_control_error():
    rc = RawClient()
    rc.send(rc.headers(1, REQ))
    data = b"".join(_h2.frame_data(1, b"a" * 16384) for _ in range(4)) + _h2.frame_data(1, b"a")
    ev = rc.send(data)
    assert StreamReset(1, E["FLOW_CONTROL_ERROR"], False) in ev
    assert rst_of(rc.out) == [(1, E["FLOW_CONTROL_ERROR"])]


def test_blocked_send_resumes_on_window_update():
    client, server = ours(True), ours(False)
    pump(client, server)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQ)
    body = b"z" * 100000
    sent = client.send_data(sid, body)
    assert sent == 65536                               # our server's initial stream window
    assert client.send_window(sid) == 0
    _, se = pump(client, server)
    got = sum(len(e.data) for e in se if isinstance(e, DataReceived))
    assert got == 65536
    server.consumed(sid, got)                          # the slow side drained: credit flows back
    ce, _ = pump(client, server)
    assert WindowUpdated(sid, 65536) in ce
    assert client.send_data(sid, body[sent:], end_stream=True) == len(body) - sent
    _, se = pump(client, server)
    assert StreamEnded(sid) in se


def test_initial_window_change_adjusts_open_streams():
    client, server = ours(True), ours(False)
    pump(client, server)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQ)
    assert client.send_window(sid) == 65536
    ev = client.receive_data(_h2.frame_settings([(4, 1000)]))
    assert client.conn.remote_initial_window == 1000 and client.send_window(sid) == 1000


def test_window_update_overflow():
    rc = RawClient()
    ev = rc.send(_h2.frame_window_update(0, (1 << 31) - 1))
    assert isinstance(ev[-1], ConnectionTerminated) and ev[-1].error_code == E["FLOW_CONTROL_ERROR"]
    rc = RawClient()
    rc.send(rc.headers(1, REQ))
    ev = rc.send(_h2.frame_window_update(1, (1 << 31) - 1))
    assert StreamReset(1, E["FLOW_CONTROL_ERROR"], False) in ev


# ----------------------------------------------------------------- state machine

def conn_error(ev):
    terms = [e for e in ev if isinstance(e, ConnectionTerminated) and not e.remote]
    return terms[0].error_code if terms else None


@pytest.mark.parametrize("frames_fn, code", [
    (lambda rc: _h2.frame_data(1, b"x"), E["PROTOCOL_ERROR"]),                 # DATA on idle
    (lambda rc: _h2.frame_rst_stream(1, 0), E["PROTOCOL_ERROR"]),              # RST on idle
    (lambda rc: _h2.frame_window_update(1, 1), E["PROTOCOL_ERROR"]),           # WU on idle
    (lambda rc: rc.headers(2, GET), E["PROTOCOL_ERROR"]),                      # even id from client
    (lambda rc: rc.headers(5, GET, True) + rc.headers(3, GET, True), E["PROTOCOL_ERROR"]),  # id goes back
    (lambda rc: rc.headers(1, GET, end_headers=False) + _h2.frame_ping(b"12345678"),
     E["PROTOCOL_ERROR"]),                                                     # interrupted block
    (lambda rc: _h2.frame_headers(1, b"\xc0"), E["COMPRESSION_ERROR"]),        # bad HPACK index
    (lambda rc: _h2.frame_push_promise(1, 2, b"\x82"), E["PROTOCOL_ERROR"]),   # push to a server
    (lambda rc: hf_bytes(hf.ContinuationFrame(1, b"\x82", flags=["END_HEADERS"])),
     E["PROTOCOL_ERROR"]),                                                     # stray CONTINUATION
    (lambda rc: b"\x00\x40\x01\x00\x00\x00\x00\x00\x01" + b"a" * 16385, E["FRAME_SIZE_ERROR"]),
])
def test_connection_errors(frames_fn, code):
    rc = RawClient()
    ev = rc.send(frames_fn(rc))
    assert conn_error(ev) == code
    assert goaway_of(rc.out).value == code
    assert rc.server.closed


@pytest.mark.parametrize("build, code", [
    (lambda rc: rc.headers(1, GET, True) + _h2.frame_data(1, b"late"), E["STREAM_CLOSED"]),
    (lambda rc: rc.headers(1, GET, True) + rc.headers(1, GET, True), E["STREAM_CLOSED"]),  # half-closed
    (lambda rc: rc.headers(1, [(b":method", b"GET"), (b":path", b"/")], True), E["PROTOCOL_ERROR"]),
    (lambda rc: rc.headers(1, GET + [(b"connection", b"keep-alive")], True), E["PROTOCOL_ERROR"]),
    (lambda rc: rc.headers(1, GET + [(b"te", b"gzip")], True), E["PROTOCOL_ERROR"]),
    (lambda rc: rc.headers(1, [(b"x-a", b"1")] + GET, True), E["PROTOCOL_ERROR"]),   # pseudo after regular
    (lambda rc: rc.headers(1, GET + [(b"X-Upper", b"1")], True), E["PROTOCOL_ERROR"]),
    (lambda rc: rc.headers(1, REQ) + rc.headers(1, [(b"x-t", b"1")]), E["PROTOCOL_ERROR"]),  # trailers w/o ES
    (lambda rc: hf_bytes(hf.PriorityFrame(1, depends_on=1)), E["PROTOCOL_ERROR"]),
])
def test_stream_errors(build, code):
    rc = RawClient()
    ev = rc.send(build(rc))
    assert conn_error(ev) is None and not rc.server.closed
    assert (1, code) in rst_of(rc.out)


def test_frames_after_stream_fully_closed_are_connection_error():
    rc = RawClient()
    rc.send(rc.headers(1, GET, True))
    rc.server.send_headers(1, [(b":status", b"204")], end_stream=True)
    assert rc.server.stream_state(1) == "closed"
    ev = rc.send(_h2.frame_data(1, b"late"))
    assert conn_error(ev) == E["STREAM_CLOSED"]


def test_late_frames_after_our_reset_are_ignored():
    rc = RawClient()
    rc.send(rc.headers(1, REQ))
    rc.server.reset_stream(1, E["CANCEL"])
    rc.server.data_to_send()
    ev = rc.send(_h2.frame_data(1, b"late") + rc.headers(1, [(b"x-t", b"1")], True))
    assert ev == [] and rc.out == b""


def test_first_frame_must_be_settings_and_preface_checked():
    s = ours(False)
    ev = s.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    assert conn_error(ev) == E["PROTOCOL_ERROR"]
    s = ours(False)
    ev = s.receive_data(PREFACE + _h2.frame_ping(b"12345678"))
    assert conn_error(ev) == E["PROTOCOL_ERROR"]


def test_local_misuse_raises():
    c = ours(True)
    pump(c, ours(False))
    with pytest.raises(_h2.H2Error):
        c.send_data(1, b"x")                       # no such stream
    c.send_headers(1, GET, end_stream=True)
    with pytest.raises(_h2.H2Error):
        c.send_data(1, b"x")                       # half-closed (local)


def test_unknown_frames_and_priority_ignored():
    rc = RawClient()
    ev = rc.send(b"\x00\x00\x03\xfa\x00\x00\x00\x00\x01xyz" + hf_bytes(hf.PriorityFrame(9, 1))
                 + rc.headers(1, GET, True))
    assert [type(e).__name__ for e in ev] == ["RequestReceived", "StreamEnded"]


# ----------------------------------------------------------------- protections

def test_too_many_streams_refused():
    rc = RawClient(Connection(client_side=False, max_concurrent_streams=3))
    data = b"".join(rc.headers(sid, GET) for sid in (1, 3, 5, 7, 9))
    ev = rc.send(data)
    assert [e.stream_id for e in ev if isinstance(e, RequestReceived)] == [1, 3, 5]
    assert rst_of(rc.out) == [(7, E["REFUSED_STREAM"]), (9, E["REFUSED_STREAM"])]
    # the HPACK table stayed in sync through the refused blocks
    ev = rc.send(rc.headers(1, [(b"x-t", b"1")], True))
    assert TrailersReceived(1, [(b"x-t", b"1")]) in ev


def test_rapid_reset():
    rc = RawClient()
    rc.server.conn.max_rapid_resets = 50
    data = b"".join(rc.headers(sid, GET) + _h2.frame_rst_stream(sid, E["CANCEL"])
                    for sid in range(1, 2 * 60, 2))
    ev = rc.server.receive_data(data, now=1.0)
    assert conn_error(ev) == E["ENHANCE_YOUR_CALM"]
    assert goaway_of(rc.server.data_to_send()).value == E["ENHANCE_YOUR_CALM"]


def test_resets_spread_over_time_are_fine():
    rc = RawClient()
    rc.server.conn.max_rapid_resets = 50
    for i, sid in enumerate(range(1, 2 * 200, 2)):
        ev = rc.server.receive_data(rc.headers(sid, GET) + _h2.frame_rst_stream(sid, E["CANCEL"]),
                                    now=float(i))       # one per second, 30 s window
        assert conn_error(ev) is None


def test_answered_streams_reset_do_not_count():
    rc = RawClient()
    rc.server.conn.max_rapid_resets = 5
    for sid in range(1, 40, 2):
        rc.send(rc.headers(sid, GET))
        rc.server.send_headers(sid, [(b":status", b"200")])
        ev = rc.send(_h2.frame_rst_stream(sid, E["CANCEL"]))
        assert conn_error(ev) is None


@pytest.mark.parametrize("frame", [_h2.frame_settings([]), _h2.frame_ping(b"12345678")],
                         ids=["settings", "ping"])
def test_control_frame_flood(frame):
    rc = RawClient()
    ev = rc.send(frame * 1001)
    assert conn_error(ev) == E["ENHANCE_YOUR_CALM"]
    rc = RawClient()
    ev = rc.send(frame * 1000)                 # at the cap, flushed: fine
    assert conn_error(ev) is None
    ev = rc.send(frame * 1000)
    assert conn_error(ev) is None


def test_empty_data_flood():
    rc = RawClient()
    rc.send(rc.headers(1, REQ))
    ev = rc.send(_h2.frame_data(1, b"") * 101)
    assert conn_error(ev) == E["ENHANCE_YOUR_CALM"]


def test_continuation_flood():
    rc = RawClient()
    data = rc.headers(1, GET, end_headers=False)
    data += b"".join(hf_bytes(hf.ContinuationFrame(1, b"\x00" * 1000)) for _ in range(70))
    ev = rc.send(data)
    assert conn_error(ev) == E["ENHANCE_YOUR_CALM"]


def test_empty_continuation_flood():
    rc = RawClient()
    data = rc.headers(1, GET, end_headers=False)
    data += b"".join(hf_bytes(hf.ContinuationFrame(1, b"")) for _ in range(101))
    ev = rc.send(data)
    assert conn_error(ev) == E["ENHANCE_YOUR_CALM"]


def test_continuation_sequence_accepted():
    rc = RawClient()
    block = rc.enc.encode(GET + [(b"x-big", b"v" * 40000)])
    ev = rc.send(_h2.frame_headers(1, block, True, 1000))
    assert ev[0] == RequestReceived(1, GET + [(b"x-big", b"v" * 40000)])


def test_hpack_bomb_resets_stream_only():
    rc = RawClient()
    big = [(b"x-bomb", b"a" * 4000)]
    rc.send(rc.headers(1, GET + big, True))
    ev = rc.send(rc.headers(3, GET + big * 100, True))      # 400 KB decoded from ~100 bytes
    assert (3, E["ENHANCE_YOUR_CALM"]) in rst_of(rc.out) and not rc.server.closed
    ev = rc.send(rc.headers(5, GET + big, True))
    assert RequestReceived(5, GET + big) in ev


# ----------------------------------------------------------------- GOAWAY

def test_graceful_goaway_two_phase():
    client, server = ours(True), ours(False)
    pump(client, server)
    client.send_headers(1, GET, end_stream=True)
    pump(client, server)
    server.start_graceful_shutdown()
    first = server.data_to_send()
    g = goaway_of(first)
    assert g.last_stream_id == (1 << 31) - 1 and g.value == 0
    # a request that crossed the first GOAWAY is still accepted
    client.send_headers(3, GET, end_stream=True)
    ce = client.receive_data(first)
    assert any(isinstance(e, ConnectionTerminated) for e in ce)
    se = server.receive_data(client.data_to_send())       # stream 3 + PING ACK
    assert RequestReceived(3, GET) in se and PingAckReceived(b"fshmgoaw") in se
    g2 = goaway_of(server.data_to_send())
    assert g2.last_stream_id == 3
    # after the final GOAWAY new streams are ignored
    assert server.receive_data(_h2.frame_headers(5, b"\x82\x87\x84\x41\x01a", True)) == []


def test_goaway_received_refuses_our_later_streams():
    client, server = ours(True), ours(False)
    pump(client, server)
    client.send_headers(1, GET)
    client.send_headers(3, GET)
    ev = client.receive_data(_h2.frame_goaway(1, 0))
    assert StreamReset(3, E["REFUSED_STREAM"], False) in ev
    with pytest.raises(_h2.H2Error):
        client.get_next_available_stream_id()


def test_close_connection_with_error():
    rc = RawClient()
    rc.send(rc.headers(1, GET, True))
    rc.server.close_connection(E["INTERNAL_ERROR"])
    g = goaway_of(rc.server.data_to_send())
    assert (g.last_stream_id, g.value) == (1, E["INTERNAL_ERROR"])
    assert rc.server.closed
