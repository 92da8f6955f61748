"""Limits before authentication: how big a request's headers may be and how long a client may take to
send them, or to send the next piece of its body.

uvicorn's httptools protocol has neither (its `h11_max_incomplete_event_size` applies to h11 only, and
its keep-alive timeout starts only after a first response), so a client could send 32 MB of headers or
hold a connection open forever a byte at a time. This protocol is uvicorn's, with three additions:
- the request line and headers are counted as they arrive: past `max_header_bytes`, 431 and close;
- from the moment the server waits for a request (the connection opened, or the previous response was
  sent) its headers must be complete within `header_timeout_s`, else 408 (or a plain close when nothing
  of a request came) and close;
- once the headers are in, the body may pause at most `body_timeout_s` between pieces (only while the
  service is reading: a paused read is the service's choice, not the client's).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import ServerLimits


def _plain_response(status: bytes, message: str) -> bytes:
    body = message.encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class _HeadersTooLarge(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size, header time and body idle limits (see above)."""

    limits: ClassVar[ServerLimits] = ServerLimits.from_env()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Waiting for a request's headers: from the end of the previous message (or the connection's
        # start) to the end of this one's headers.
        self._in_headers = True
        self._header_bytes = 0  # request line and headers of the current request, as parsed
        self._raw_bytes = 0  # bytes received since the server began waiting for the current request
        self._too_large = False
        self._timer: asyncio.TimerHandle | None = None
        self._reading_body = False

    # ---- timers --------------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wait_for_request(self) -> None:
        self._in_headers = True
        self._header_bytes = 0
        self._raw_bytes = 0
        self._reading_body = False
        self._arm(self.limits.header_timeout_s, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._raw_bytes:
            self.transport.write(_plain_response(b"408 Request Timeout", "Request headers not received in time"))
        self.transport.close()

    def _body_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._reading_body:
            return
        if self.flow is not None and self.flow.read_paused:  # the service is not reading: not the client's fault
            self._arm(self.limits.body_timeout_s, self._body_too_slow)
            return
        self.logger.warning("Closing a connection whose request body stalled for %ss", self.limits.body_timeout_s)
        self.transport.close()

    # ---- connection and parser callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._raw_bytes += len(data)
        elif self._reading_body:
            self._arm(self.limits.body_timeout_s, self._body_too_slow)
        super().data_received(data)
        # Headers that are still incomplete after more than the limit: refuse without buffering more.
        if self._in_headers and self._raw_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            self._too_large = True
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        if self._too_large:
            message = f"Request headers are larger than {self.limits.max_header_bytes} bytes"
            self.transport.write(_plain_response(b"431 Request Header Fields Too Large", message))
            self.transport.close()
            return
        super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge  # stops the parser; data_received answers 431 (send_400_response)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self._reading_body = True
            self._arm(self.limits.body_timeout_s, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._reading_body = False
        self._disarm()
        super().on_message_complete()
        # The next request's headers are counted from here; the clock starts once this one is answered
        # (an early answer, a 413 say, can come before the client has sent all of its body).
        self._in_headers = True
        self._header_bytes = 0
        self._raw_bytes = 0
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            self._wait_for_request()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request's headers are in already: it starts now
        super().on_response_complete()
        if not pipelined and self._in_headers and not self.transport.is_closing():
            self._wait_for_request()


__all__ = ["LimitedHttpToolsProtocol"]
