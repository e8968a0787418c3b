"""The origin's response body as the non-seekable file object s3transfer reads from."""
from __future__ import annotations

import http.client
import socket
import threading
from typing import Callable

from deadline import Deadline
from errors import BadResponse, BodyError, DeadlineExceeded, TooLarge, TransferError


class OriginBody:
    """The response body as a non-seekable file object for `upload_fileobj`.

    `read(n)` returns exactly n bytes unless the body ended, because s3transfer takes a short read
    for the end of the stream. It raises instead of returning a short body when the origin sent
    less than its Content-Length, when the body passes `max_bytes`, or when the deadline passes.
    """

    def __init__(self, url: str, response: http.client.HTTPResponse, sock: socket.socket,
                 deadline: Deadline, read_timeout: float, max_bytes: int, cancelled: threading.Event,
                 release: Callable[[bool], None]) -> None:
        self.url = url
        self.status = response.status
        self.reason = response.reason
        self.headers = response.headers
        self.content_type = response.headers.get("Content-Type", "")
        self.content_length = _declared_length(response)
        self.bytes_read = 0
        self._response, self._sock, self._release = response, sock, release
        self._deadline, self._read_timeout, self._max_bytes = deadline, read_timeout, max_bytes
        self._cancelled = cancelled
        self._pushback = b""
        self._eof = False
        self._released = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def peek_head(self, size: int) -> bytes:
        """Read up to `size` bytes and keep them to be returned again by `read`."""
        if not self._pushback:
            self._pushback = self.read(size)
        return self._pushback

    def unread(self, data: bytes) -> None:
        """Put `data` back in front of the stream (it was read ahead to decide how to upload)."""
        self._pushback = data + self._pushback

    def drain(self, limit: int = 64 * 1024) -> None:
        """Read a small known-length body to its end so its connection can be reused."""
        length = self.content_length
        if length is not None and length <= limit and not self._eof:
            try:
                while self.read(limit):
                    pass
            except TransferError:
                pass

    def read_buffer(self, limit: int) -> bytearray:
        """Up to `limit` bytes in one preallocated buffer: no list of chunks and no join, so a
        small body costs its size once, not twice. Shorter than `limit` only at the end."""
        buf, pos = bytearray(limit), 0
        if self._pushback:
            head, self._pushback = self._pushback[:limit], self._pushback[limit:]
            buf[:len(head)], pos = head, len(head)
        while pos < limit and not self._eof:
            chunk = self._read1(min(limit - pos, 256 * 1024))
            if not chunk:
                self._finish()
                break
            buf[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
        if pos == limit and not self._eof and self.content_length == self.bytes_read:
            self.read(1)  # reach the end now: it checks the length and frees the connection
        del buf[pos:]
        return buf

    def read(self, size: int = -1) -> bytes:
        chunks, want = [], size if size is not None and size >= 0 else float("inf")
        if self._pushback:
            chunks.append(self._pushback[: int(min(want, len(self._pushback)))])
            self._pushback = self._pushback[len(chunks[0]):]
            want -= len(chunks[0])
        while want > 0 and not self._eof:
            chunk = self._read1(int(min(want, 256 * 1024)))
            if not chunk:
                self._finish()
                break
            chunks.append(chunk)
            want -= len(chunk)
        return b"".join(chunks)

    def _read1(self, size: int) -> bytes:
        if self._cancelled.is_set() or self._deadline.expired():
            raise DeadlineExceeded("deadline reached while reading the body", url=self.url)
        self._sock.settimeout(self._deadline.bound(self._read_timeout))
        try:
            chunk = self._response.read1(size)
        except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
            raise self._read_error(exc) from None
        if not chunk and (self._cancelled.is_set() or self._deadline.expired()):
            # A socket shut down by the cancel reads as end-of-body: never take that for the end.
            raise DeadlineExceeded("deadline reached while reading the body", url=self.url)
        self.bytes_read += len(chunk)
        limit = self._max_bytes
        if limit and self.bytes_read > limit:
            raise TooLarge(f"body is larger than MAX_BYTES ({limit} bytes)", url=self.url,
                           bytes_read=self.bytes_read)
        return chunk

    def _read_error(self, exc: Exception) -> Exception:
        if self._cancelled.is_set() or self._deadline.expired():
            return DeadlineExceeded("deadline reached while reading the body", url=self.url)
        kind = "timed out" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__})"
        return BodyError(f"body read {kind} after {self.bytes_read} bytes", url=self.url,
                         bytes_read=self.bytes_read)

    def _finish(self) -> None:
        self._eof = True
        expected = self.content_length
        if expected is not None and self.bytes_read != expected:
            raise BodyError(f"body truncated: got {self.bytes_read} of {expected} bytes",
                            url=self.url, bytes_read=self.bytes_read)
        if expected is not None and self._extra_bytes():
            raise BadResponse(f"origin sent more than its Content-Length of {expected} bytes",
                              url=self.url)
        self._give_back(True)

    def _extra_bytes(self) -> bool:
        """Whether bytes beyond Content-Length are already here: the body (or the next response
        on this connection) cannot be trusted then. Looks without waiting."""
        fp = self._response.fp
        if fp is None:
            return False
        self._sock.settimeout(0)
        try:
            return bool(fp.peek(1))
        except (OSError, ValueError):
            return False
        finally:
            self._sock.settimeout(self._read_timeout)

    def _give_back(self, reusable: bool) -> None:
        if not self._released:
            self._released = True
            self._release(reusable)

    def close(self) -> None:
        """Release the connection: back to the pool after a clean end, otherwise closed."""
        self._give_back(False)


def _declared_length(response: http.client.HTTPResponse) -> int | None:
    if response.chunked:
        return None
    value = response.headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None
