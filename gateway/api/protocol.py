"""The HTTP/1.1 connection: uvicorn's httptools protocol, with the bounds it lacks.

Measured against uvicorn 0.54 (issue 13): it has no timeout at all before a request's head is
complete (``timeout_keep_alive`` only starts after a response), so 200 slowloris connections
sending a header byte now and then, or connections that send nothing, stayed open forever; it
does not bound the size of a head; ``limit_concurrency`` answers ``503`` in plain text; and what
the parser refuses (unknown method, bad chunking, a URL over 64 KB, a negative Content-Length)
gets a plain-text 400. Another server (hypercorn, granian) would have meant a new dependency and
re-measuring the read path of bench/, for four small hooks on the protocol we already run, so
the bounds are added here, on the event loop's own timers:

- the head (request line and headers) must be complete ``GATEWAY_HEADER_TIMEOUT`` seconds after
  the connection opens or the request's first byte; a partial head is answered 408, an idle new
  connection is closed;
- a head larger than ``GATEWAY_MAX_HEADER_BYTES`` is 431 (414 while still in the URL);
- beyond ``GATEWAY_MAX_CONNECTIONS`` open connections a request is answered 503 with
  ``Retry-After`` and its connection closed (refusing in ``accept`` would look like a network fault);
- a body still incomplete ``GATEWAY_BODY_TIMEOUT`` seconds after its head closes the connection
  once the app has answered (``api/edge.py`` answers 408 to an app that waits for it); the same
  when a client stops reading a response (write buffer full) for that long;
- parser refusals and the 503 are OperationOutcomes. An unknown method is 400, not the 501 RFC 9110
  suggests: the codebase answers what a client causes with a 4xx, and a 5xx counts against the server
  (monitoring, and the fuzzers that must find none).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.errors import Issue, operation_outcome
from gateway.fhir.canonical import dumps
from gateway.settings import Settings

log = logging.getLogger("gateway.http")

URL_LIMIT = 65535  # httptools.parse_url cannot take more


class _Refused(Exception):
    """Raised from a parser callback after answering: stops the parser."""


class _Limits:
    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_connections: int


def protocol_class(settings: Settings) -> type["GatewayHttpProtocol"]:
    """The protocol class uvicorn instantiates per connection, bound to these settings."""
    limits = _Limits()
    limits.header_timeout = settings.header_timeout
    limits.body_timeout = settings.body_timeout
    limits.max_header_bytes = settings.max_header_bytes
    limits.max_connections = settings.max_connections
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), {"limits": limits})


def uvicorn_config(app: Any, settings: Settings, **options: Any):
    """The uvicorn configuration ``gateway serve`` runs (tests start the same)."""
    import uvicorn

    # Access logs are off: request lines carry search parameters such as personnummer. No WebSockets:
    # the gateway has no such endpoint, and an upgraded connection would leave these bounds behind.
    return uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False,
                          log_level=settings.log_level.lower(), http=protocol_class(settings), ws="none",
                          limit_concurrency=None, **options)


def outcome_bytes(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response carrying an OperationOutcome, closing the connection."""
    body = dumps(operation_outcome([Issue(code, message)]))
    head = [STATUS_LINE[status], b"content-type: application/fhir+json; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
    return b"".join(head) + b"\r\n" + body


class GatewayHttpProtocol(HttpToolsProtocol):
    limits: _Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = b""
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes received towards the current head
        self._in_head = True  # the next bytes belong to a request head
        self._body_pending = False  # a head arrived, its body is not complete
        self._body_late = False

    # -- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserInvalidMethodError:
            self._refuse(400, "not-supported", "The request method is not one this server knows; FHIR uses GET, "
                                               "HEAD, POST, PUT, PATCH and DELETE.")
        except httptools.HttpParserError as exc:
            if len(self.url) > URL_LIMIT:
                self._refuse_long_head()
            else:
                self._refuse(400, "structure", f"The HTTP request is malformed ({exc}); send a valid HTTP/1.1 "
                                               "request.")
        else:
            if self._in_head and self._head_bytes > self.limits.max_header_bytes:
                self._refuse_long_head()

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel("_head_timer")
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes or len(self.url) > URL_LIMIT:  # it came in one piece
            self._refuse_long_head()
            raise _Refused  # stops the parser: no app, no body
        self._in_head, self._head_bytes = False, 0
        self._body_pending, self._body_late = True, False
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)
        if len(self.connections) > self.limits.max_connections:
            log.warning("refused a request: %d connections open, GATEWAY_MAX_CONNECTIONS is %d",
                        len(self.connections), self.limits.max_connections)
            self.app = _overloaded  # this request only: uvicorn picks self.app when it starts the cycle
            try:
                super().on_headers_complete()
            finally:
                self.app = self.config.loaded_app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel("_body_timer")
        self._body_pending, self._in_head, self._head_bytes = False, True, 0

    def on_response_complete(self) -> None:
        if self._body_pending and self._body_late:  # answered (408) while the body is still owed
            self.transport.close()
        super().on_response_complete()

    # -- slow readers ----------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.body_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        self._cancel("_send_timer")
        super().resume_writing()

    # -- timers ----------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head waits behind a response in progress: check later
            return
        if self._head_bytes == 0:  # idle: nothing to answer
            self.transport.close()
            return
        self._refuse(408, "timeout", f"The request line and headers did not arrive within "
                                     f"{self.limits.header_timeout:g} seconds (GATEWAY_HEADER_TIMEOUT).")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._body_pending or self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()  # answered already; the client is still trickling a body nobody reads
        else:
            self._body_late = True  # the app's own deadline answers 408; then the connection closes

    def _send_timed_out(self) -> None:
        self._send_timer = None
        if not self.transport.is_closing():
            log.info("dropped a connection whose client stopped reading for %gs", self.limits.body_timeout)
            self.transport.abort()  # close() would wait for the buffer to drain, which is what never happens

    # -- answers the app never sees ----------------------------------------------------------
    def _refuse_long_head(self) -> None:
        limit = self.limits.max_header_bytes
        if not self.headers or len(self.url) > min(limit, URL_LIMIT):  # the URL alone is too long
            self._refuse(414, "too-costly", f"The URL is longer than this server accepts ({min(limit, URL_LIMIT)} "
                                            "bytes, GATEWAY_MAX_HEADER_BYTES); use POST [type]/_search with the "
                                            "parameters in the body.")
        else:
            self._refuse(431, "too-costly", f"The request line and headers are larger than this server accepts "
                                            f"({limit} bytes, GATEWAY_MAX_HEADER_BYTES).")

    def _refuse(self, status: int, code: str, message: str) -> None:
        if self.transport.is_closing():
            return
        # No request data in the log: it may carry personnummer. Timeouts are routine under attack.
        log.log(logging.INFO if status == 408 else logging.WARNING, "refused a request with %d", status)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # too late to answer: only the connection can go
                self.transport.close()
                return
            cycle.disconnected = True  # the app stops waiting for a body that will not come
            cycle.message_event.set()
        self.transport.write(outcome_bytes(status, code, message))
        self.transport.close()


async def _overloaded(scope: Any, receive: Any, send: Any) -> None:
    body = dumps(operation_outcome([Issue("throttled", "The server has as many connections open as it allows "
                                                       "(GATEWAY_MAX_CONNECTIONS); retry shortly.")]))
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/fhir+json; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
