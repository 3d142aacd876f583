"""User filters loaded by import path in the filter tests (a stand-in for a
user's own package: nothing here is imported by fastmesh itself)."""
from __future__ import annotations

import asyncio

import fastmesh


class HeaderAuth(fastmesh.HttpFilter):
    """Let a request through only with the right API key header: the worked
    example of docs/filters.md."""

    def __init__(self, header: str = "x-api-key", keys: list | tuple = ()) -> None:
        self.header = header
        self.keys = frozenset(keys)

    def on_request_headers(self, request):
        key = request.get_header(self.header)
        if key not in self.keys:
            request.respond(401, b"missing or bad API key\n",
                            headers={"www-authenticate": "ApiKey"})
            return fastmesh.STOP
        request.remove_header(self.header)          # the upstream never sees it
        request.set_header("x-authenticated", "yes")
        request.add_response_header("x-auth", "ok")
        return fastmesh.CONTINUE


class AsyncLookup(fastmesh.HttpFilter):
    """A filter that waits on something (a coroutine) before deciding."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay

    async def on_request_headers(self, request):
        await asyncio.sleep(self.delay)
        if request.get_header("x-deny") is not None:
            request.respond(403, b"denied\n")
            return fastmesh.STOP
        request.set_header("x-looked-up", request.path)
        return fastmesh.CONTINUE


class Recorder(fastmesh.HttpFilter):
    """Records the hooks it saw (response status, done)."""

    def __init__(self) -> None:
        self.seen: list = []

    def on_request_headers(self, request):
        request.state["path"] = request.path
        return None

    def on_response_headers(self, request, status):
        self.seen.append(("response", request.state["path"], status))
        request.add_response_header("x-seen-status", str(status))

    def on_done(self, request):
        # Done hooks run for every request, also those an earlier filter stopped.
        self.seen.append(("done", request.state.get("path", request.path)))


class Broken(fastmesh.HttpFilter):
    def on_request_headers(self, request):
        raise RuntimeError("boom")


class NotAFilter:
    pass


class BodyLimit(fastmesh.HttpFilter):
    """Counts request body bytes as they pass and ends the request with 413
    once they exceed `limit` (whatever the framing: Content-Length, chunked,
    HTTP/2 DATA)."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit

    def on_request_body(self, request, data):
        n = request.state.get("n", 0) + len(data)
        request.state["n"] = n
        if n > self.limit:
            request.respond(413, b"body too large\n")
            return fastmesh.STOP
        return None


class BodyDigest(fastmesh.HttpFilter):
    """Hashes both bodies as they pass; the digests land in `seen` when the
    request is done."""

    def __init__(self) -> None:
        self.seen: list = []

    def on_request_headers(self, request):
        import hashlib
        request.state["rq"] = hashlib.sha256()
        request.state["rs"] = hashlib.sha256()

    def on_request_body(self, request, data):
        request.state["rq"].update(data)

    def on_response_body(self, request, data):
        request.state["rs"].update(data)

    def on_done(self, request):
        self.seen.append((request.path, request.state["rq"].hexdigest(),
                          request.state["rs"].hexdigest()))


class BodyHeadReader(fastmesh.HttpFilter):
    """Reads the request head from a body hook (the head must still be there)."""

    def __init__(self) -> None:
        self.seen: list = []

    def on_request_body(self, request, data):
        self.seen.append((request.method, request.path, request.get_header("x-n")))


class Forever(fastmesh.HttpFilter):
    """Pauses every request and never resumes it."""

    def on_request_headers(self, request):
        return fastmesh.PAUSE


class BadAnswers(fastmesh.HttpFilter):
    """Misbehaves on request: a result code that does not exist, or a framing
    header, by the x-bad header."""

    def on_request_headers(self, request):
        bad = request.get_header("x-bad")
        if bad == "code":
            return 3
        if bad == "framing":
            request.add_header("content-length", "5")
        return None


class LateRespond(fastmesh.HttpFilter):
    """Tries to answer from the response phase (too late: an error)."""

    def on_response_headers(self, request, status):
        request.respond(418, b"too late\n")


class BodyBoom(fastmesh.HttpFilter):
    """Raises from its request-body hook."""

    def on_request_body(self, request, data):
        raise RuntimeError("body boom")


class PeerHeader(fastmesh.HttpFilter):
    """Tells the upstream who the TLS client is (request.peer), as a policy
    or access-log filter would read it."""

    def on_request_headers(self, request):
        peer = request.peer
        request.set_header("x-peer", peer.uri if peer is not None else "none")
        return fastmesh.CONTINUE
