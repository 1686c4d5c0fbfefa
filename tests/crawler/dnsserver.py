"""A real DNS server on loopback (dnslib, UDP, ephemeral port) for the resolver and fetcher tests.

``zone`` maps a name (no trailing dot) to its behaviour: an IPv4 address string (A answer, AAAA:
no data), ``"NXDOMAIN"``, ``"SERVFAIL"``, ``"NODATA"``, ``"DROP"`` (never answers) or
``("delay", seconds, ip)``. Unknown names are NXDOMAIN (with an SOA, minimum ``neg_ttl``).
``queries`` counts what reached the server, per (name, qtype).
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections import Counter

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, A, DNSError, DNSLabel
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


class _Resolver(BaseResolver):
    def __init__(self, owner: LoopbackDNS) -> None:
        self.owner = owner

    def resolve(self, request, handler):  # noqa: ANN001 - dnslib's interface
        o = self.owner
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        qtype = QTYPE[q.qtype]
        with o.lock:
            o.queries[(name, qtype)] += 1
            o.inflight += 1
            o.max_inflight = max(o.max_inflight, o.inflight)
        try:
            return self._answer(request, name, qtype)
        finally:
            with o.lock:
                o.inflight -= 1

    def _answer(self, request, name, qtype):  # noqa: ANN001
        o = self.owner
        q = request.q
        reply = request.reply()
        how = o.zone.get(name, "NXDOMAIN")
        if isinstance(how, tuple) and how[0] == "delay":
            time.sleep(how[1])
            how = how[2]
        if how == "DROP":
            raise DNSError("dropped on purpose")
        soa = RR(DNSLabel("test."), QTYPE.SOA, ttl=o.neg_ttl,
                 rdata=SOA("ns.test.", "admin.test.", (1, 3600, 600, 86400, o.neg_ttl)))
        if how == "SERVFAIL":
            reply.header.rcode = RCODE.SERVFAIL
        elif how == "NXDOMAIN":
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(soa)
        elif how == "NODATA":
            reply.add_auth(soa)
        elif qtype == "A" and ":" not in how:
            reply.add_answer(RR(q.qname, QTYPE.A, ttl=o.ttl, rdata=A(how)))
        elif qtype == "AAAA" and ":" in how:
            reply.add_answer(RR(q.qname, QTYPE.AAAA, ttl=o.ttl, rdata=AAAA(how)))
        else:
            reply.add_auth(soa)  # the name exists, no address of this type
        return reply


class _Quiet(DNSLogger):
    def __init__(self) -> None:
        super().__init__(logf=lambda *_: None)


class _UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    allow_reuse_address = True
    daemon_threads = True


class LoopbackDNS:
    def __init__(self, zone: dict | None = None, ttl: int = 300, neg_ttl: int = 60) -> None:
        self.zone = dict(zone or {})
        self.ttl, self.neg_ttl = ttl, neg_ttl
        self.queries: Counter = Counter()
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        self._server = DNSServer(_Resolver(self), address="127.0.0.1", port=0, logger=_Quiet(),
                                 handler=DNSHandler, server=_UDPServer)

    @property
    def address(self) -> str:
        host, port = self._server.server.server_address[:2]
        return f"{host}:{port}"

    def count(self, name: str, qtype: str | None = None) -> int:
        with self.lock:
            return sum(n for (nm, qt), n in self.queries.items() if nm == name and qtype in (None, qt))

    def start(self) -> LoopbackDNS:
        self._thread = threading.Thread(target=self._server.server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.server.shutdown()
        self._server.server.server_close()
        self._thread.join(2)

    def __enter__(self) -> LoopbackDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
