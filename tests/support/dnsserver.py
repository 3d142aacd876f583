"""A small authoritative DNS server for the discovery tests: UDP on
127.0.0.1, answers A/AAAA from a table the test edits while it runs, with
the TTL it is told; counts queries; NXDOMAIN for unknown names, or no answer
at all while `silent` (a resolver that times out). Messages are parsed and
built by dnspython, the same library the resolver side uses."""
from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}   # (name, "A"|"AAAA") -> addresses
        self.ttl = 30
        self.silent = False
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="DnsServer")
        self.thread.start()

    def set(self, name: str, *addresses: str, kind: str = "A") -> None:
        with self.lock:
            key = (name.rstrip(".").lower() + ".", kind)
            if addresses:
                self.records[key] = list(addresses)
            else:
                self.records.pop(key, None)

    def count(self, name: str, kind: str | None = None) -> int:
        """Queries for `name` so far (of one record type, if given)."""
        n = name.rstrip(".").lower() + "."
        with self.lock:
            return sum(1 for q, k in self.queries if q == n and kind in (None, k))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 - not DNS: ignore it
                continue
            question = q.question[0]
            name = question.name.to_text().lower()
            kind = dns.rdatatype.to_text(question.rdtype)
            with self.lock:
                self.queries.append((name, kind))
                silent = self.silent
                addrs = list(self.records.get((name, kind), ()))
                known = any(n == name for n, _ in self.records)
                ttl = self.ttl
            if silent:
                continue
            r = dns.message.make_response(q)
            r.flags |= dns.flags.AA
            if addrs:
                r.answer.append(dns.rrset.from_text_list(question.name, ttl, dns.rdataclass.IN,
                                                         question.rdtype, addrs))
            elif not known:
                r.set_rcode(dns.rcode.NXDOMAIN)
            try:
                self.sock.sendto(r.to_wire(), peer)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
