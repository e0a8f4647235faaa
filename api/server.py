"""`lsr serve`: uvicorn with the limits a public endpoint needs and uvicorn alone does not set.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) and caps concurrent connections
(`limit_concurrency`, 503 beyond it), but waits forever for the first request head of a connection, so an idle
or trickling client holds a connection open indefinitely. `GuardedH11Protocol` adds that deadline: the request
line and headers must arrive within `header_timeout_s` of the connection opening (or of the previous
response); otherwise a client that sent part of a head gets 408 and the connection closes, one log line each.
The body deadline (`body_timeout_s`) is enforced by the app (api/app.py), which reads bodies itself.
"""
from __future__ import annotations

import asyncio
import json
import logging

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import Settings, create_app

log = logging.getLogger("lsr.api")


class GuardedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def data_received(self, data: bytes) -> None:
        self._head_bytes += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:  # a whole request head has arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        peer = "%s:%d" % self.client if self.client else "client"
        if self._head_bytes and self.conn.their_state is h11.IDLE:
            body = json.dumps({"detail": f"the request head did not arrive within {self.header_timeout_s:g} s"})
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body.encode()))
            log.warning("%s: request head incomplete after %g s (%d bytes); answered 408 and closed", peer,
                        self.header_timeout_s, self._head_bytes)
        else:
            log.warning("%s: no request within %g s; closed", peer, self.header_timeout_s)
        self.transport.close()


def guarded_protocol(header_timeout_s: float) -> type[GuardedH11Protocol]:
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout_s": float(header_timeout_s)})


def server_config(settings: Settings, *, host: str, port: int, service=None) -> uvicorn.Config:
    return uvicorn.Config(create_app(settings, service=service), host=host, port=port,
                          http=guarded_protocol(settings.header_timeout_s),  # type: ignore[arg-type]
                          timeout_keep_alive=settings.keep_alive_s, limit_concurrency=settings.max_connections,
                          log_level="info")


def run(settings: Settings, *, host: str, port: int, service=None) -> None:
    uvicorn.Server(server_config(settings, host=host, port=port, service=service)).run()
