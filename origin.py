"""Fetching one URL from its origin with the standard library's http.client.

Why not urllib: we resolve the host once, check every address, and connect to the address we
checked (no second lookup an attacker's DNS could answer differently); we follow redirects
ourselves so each hop is checked again; and we read the body with `read1` so the deadline is
checked between socket reads instead of after a 64 KB buffer fills.
"""
from __future__ import annotations

import http.client
import ipaddress
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from deadline import Deadline
from errors import (BlockedAddress, BodyError, DeadlineExceeded, HTTPStatusError, InvalidURL,
                    OriginUnreachable, RedirectError, TooLarge)

log = logging.getLogger(__name__)

REDIRECT_CODES = (301, 302, 303, 307, 308)
USER_AGENT = "url2s3/1.0"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class OriginOptions:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_redirects: int = 5
    max_bytes: int = 0  # 0 = no limit
    allow_private: bool = False  # lifts the address check entirely
    private_networks: tuple[IPNetwork, ...] = ()  # lifts it for these networks only
    allowed_hosts: tuple[str, ...] = ()  # when set, only these hosts ("*.x.org" for subdomains)
    ca_bundle: str | None = None

    def host_allowed(self, host: str) -> bool:
        if not self.allowed_hosts:
            return True
        host = host.lower().rstrip(".")
        return any(host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
                   for pattern in self.allowed_hosts)

    def address_allowed(self, ip: IPAddress) -> str | None:
        """None when `ip` may be fetched from, else why not."""
        if self.allow_private or any(ip in net for net in self.private_networks):
            return None
        return address_problem(ip)


def normalize_url(raw: str) -> str:
    """A fetchable http(s) URL: scheme and host lowercased, IDNA host, non-ASCII percent-encoded."""
    text = raw.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL: {exc}", url=raw) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidURL(f"scheme {scheme or '(none)'!r} is not allowed, only http and https", url=raw)
    if not parts.hostname:
        raise InvalidURL("URL has no host", url=raw)
    try:
        host = parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
    except UnicodeError:
        raise InvalidURL("host name is not valid", url=raw) from None
    if any(c in host for c in " \t\r\n%") or "@" in parts.netloc and parts.username:
        raise InvalidURL("URL host is not valid (spaces, escapes or credentials)", url=raw)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=?~-._")
    return urlunsplit((scheme, netloc.lower(), path, query, ""))


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` must not be fetched from, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_problem(embedded)
    for attr in ("is_loopback", "is_private", "is_link_local", "is_multicast", "is_reserved",
                 "is_unspecified"):
        if getattr(ip, attr):
            return attr[3:].replace("_", "-")
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if not ip.is_global:
        return "not globally routable"
    return None


def resolve(host: str, port: int, options: OriginOptions) -> list[tuple]:
    """getaddrinfo once; every address must pass the check. The caller connects only to these."""
    if not options.host_allowed(host):
        raise BlockedAddress(f"host {host} is not in ALLOWED_HOSTS")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        permanent = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5))
        raise OriginUnreachable(f"DNS lookup failed for {host}: {exc.strerror}", retryable=not permanent) from None
    for info in infos:
        address = info[4][0]
        problem = options.address_allowed(ipaddress.ip_address(address.split("%", 1)[0]))
        if problem:
            raise BlockedAddress(f"{host} resolves to {address} ({problem}), which is not allowed")
    return infos


class CancelScope:
    """Sockets of in-flight transfers, so one call can unblock them all when time is up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.cancelled = threading.Event()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            if self.cancelled.is_set():
                raise DeadlineExceeded("cancelled before connecting")
            self._sockets.add(sock)

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def cancel(self) -> None:
        """Shut down every registered socket; blocked reads return at once."""
        with self._lock:
            self.cancelled.set()
            for sock in self._sockets:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass


def _connect(infos: list[tuple], timeout: float) -> socket.socket:
    """Connect to the first checked address that answers (never resolving again)."""
    last: OSError | None = None
    for family, socktype, proto, _, addr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(addr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, infos: list[tuple], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._infos = infos

    def connect(self) -> None:
        self.sock = _connect(self._infos, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, infos: list[tuple], timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._infos = infos

    def connect(self) -> None:
        raw = _connect(self._infos, self.timeout)
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        import time
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OriginBody:
    """The response body as a non-seekable file object for `upload_fileobj`.

    `read(n)` returns exactly n bytes unless the body ended, because s3transfer takes a short read
    for the end of the stream. It raises instead of returning a short body when the origin sent
    less than its Content-Length, when the body passes `max_bytes`, or when the deadline passes.
    """

    def __init__(self, url: str, response: http.client.HTTPResponse, sock: socket.socket,
                 deadline: Deadline, options: OriginOptions, scope: CancelScope) -> None:
        self.url = url
        self.status = response.status
        self.headers = response.headers
        self.content_type = response.headers.get("Content-Type", "")
        self.content_length = _declared_length(response)
        self.bytes_read = 0
        self._response, self._sock = response, sock
        self._deadline, self._options, self._scope = deadline, options, scope
        self._pushback = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def peek_head(self, size: int) -> bytes:
        """Read up to `size` bytes and keep them to be returned again by `read`."""
        if not self._pushback:
            self._pushback = self.read(size)
        return self._pushback

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
        if self._scope.cancelled.is_set() or self._deadline.expired():
            raise DeadlineExceeded("deadline reached while reading the body", url=self.url)
        self._sock.settimeout(self._deadline.bound(self._options.read_timeout))
        try:
            chunk = self._response.read1(size)
        except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
            raise self._read_error(exc) from None
        if not chunk and (self._scope.cancelled.is_set() or self._deadline.expired()):
            # A socket shut down by the cancel reads as end-of-body: never take that for the end.
            raise DeadlineExceeded("deadline reached while reading the body", url=self.url)
        self.bytes_read += len(chunk)
        limit = self._options.max_bytes
        if limit and self.bytes_read > limit:
            raise TooLarge(f"body is larger than MAX_BYTES ({limit} bytes)", url=self.url,
                           bytes_read=self.bytes_read)
        return chunk

    def _read_error(self, exc: Exception) -> Exception:
        if self._scope.cancelled.is_set() or self._deadline.expired():
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

    def close(self) -> None:
        self._scope.discard(self._sock)
        self._response.close()
        self._sock.close()


def _declared_length(response: http.client.HTTPResponse) -> int | None:
    if response.chunked:
        return None
    value = response.headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


class Origin:
    """Opens URLs: checks, connects to the checked address, follows redirects, checks status."""

    def __init__(self, options: OriginOptions, scope: CancelScope | None = None) -> None:
        self.options = options
        self.scope = scope or CancelScope()
        self._tls = ssl.create_default_context(cafile=options.ca_bundle)

    def open(self, url: str, deadline: Deadline) -> OriginBody:
        """The body of the final (non-redirect) 2xx answer, ready to stream."""
        seen: list[str] = []
        current = normalize_url(url)
        while True:
            seen.append(current)
            body = self._request(current, deadline)
            if body.status not in REDIRECT_CODES:
                return self._checked_size(_checked_status(body))
            location = body.headers.get("Location")
            body.close()
            current = self._next_hop(url, current, location, seen)

    def _checked_size(self, body: OriginBody) -> OriginBody:
        """Refuse a declared size above max_bytes before reading any of the body."""
        limit = self.options.max_bytes
        if limit and body.content_length is not None and body.content_length > limit:
            body.close()
            raise TooLarge(f"Content-Length {body.content_length} is larger than MAX_BYTES ({limit})",
                           url=body.url)
        return body

    def _next_hop(self, url: str, current: str, location: str | None, seen: list[str]) -> str:
        if not location:
            raise RedirectError("redirect without a Location header", url=url)
        target = normalize_url(urljoin(current, location.strip()))
        if target in seen:
            raise RedirectError(f"redirect loop back to {target}", url=url)
        if len(seen) > self.options.max_redirects:
            raise RedirectError(f"more than {self.options.max_redirects} redirects", url=url)
        log.debug("redirect %s -> %s", current, target)
        return target

    def _request(self, url: str, deadline: Deadline) -> OriginBody:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = resolve(parts.hostname, port, self.options)
        conn = self._connection(parts.scheme, parts.hostname, port, infos, deadline)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        sock = None
        try:
            conn.connect()
            sock = conn.sock  # kept: getresponse() drops conn.sock when the origin says close
            self.scope.add(sock)
            conn.request("GET", target, headers=_request_headers(parts.netloc))
            sock.settimeout(deadline.bound(self.options.read_timeout))
            response = conn.getresponse()
        except BaseException as exc:
            if sock is not None:
                self.scope.discard(sock)
            conn.close()
            raise self._request_error(exc, url, deadline) from None
        return OriginBody(url, response, sock, deadline, self.options, self.scope)

    def _connection(self, scheme: str, host: str, port: int, infos: list[tuple],
                    deadline: Deadline) -> http.client.HTTPConnection:
        if deadline.expired() or self.scope.cancelled.is_set():
            raise DeadlineExceeded("deadline reached before connecting")
        timeout = deadline.bound(self.options.connect_timeout)
        if scheme == "https":
            return _PinnedHTTPSConnection(host, port, infos, timeout, self._tls)
        return _PinnedHTTPConnection(host, port, infos, timeout)

    def _request_error(self, exc: BaseException, url: str, deadline: Deadline) -> BaseException:
        if isinstance(exc, DeadlineExceeded) or not isinstance(exc, Exception):
            return exc
        if self.scope.cancelled.is_set() or deadline.expired():
            return DeadlineExceeded("deadline reached while waiting for the origin", url=url)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return OriginUnreachable(f"TLS certificate not trusted: {exc.verify_message}", url=url,
                                     retryable=False)
        if isinstance(exc, TimeoutError):
            return OriginUnreachable("origin timed out", url=url)
        if isinstance(exc, ConnectionRefusedError):
            return OriginUnreachable("connection refused", url=url)
        return OriginUnreachable(f"origin failed: {type(exc).__name__}: {exc}"[:300], url=url)


def _request_headers(netloc: str) -> dict[str, str]:
    return {"Host": netloc, "User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5",
            "Accept-Encoding": "identity"}


def _checked_status(body: OriginBody) -> OriginBody:
    if 200 <= body.status < 300 and body.status != 204:
        return body
    reason = body._response.reason
    retry_after = _retry_after(body.headers.get("Retry-After"))
    body.close()
    raise HTTPStatusError(body.status, reason, url=body.url, retry_after=retry_after)
