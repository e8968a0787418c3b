"""Fetching one URL from its origin with the standard library's http.client.

Why not urllib: we resolve the host once, check every address, and connect to the address we
checked (no second lookup an attacker's DNS could answer differently); we follow redirects
ourselves so each hop is checked again; and we read the body with `read1` so the deadline is
checked between socket reads instead of after a 64 KB buffer fills.
"""
from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from body import OriginBody
from connections import CancelScope, ConnectionPool, PoolKey, new_connection
from deadline import Deadline
from errors import (BadResponse, BlockedAddress, DeadlineExceeded, HTTPStatusError, InvalidURL, OriginUnreachable,
                    RedirectError, TooLarge)
from netguard import IPAddress, IPNetwork, address_problem, resolve

log = logging.getLogger(__name__)

REDIRECT_CODES = (301, 302, 303, 307, 308)
USER_AGENT = "url2s3/1.0"
# What a kept-alive connection the origin has meanwhile closed looks like on the next request.
_STALE_ERRORS = (ConnectionResetError, BrokenPipeError, http.client.BadStatusLine)


class _StaleConnection(Exception):
    pass


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
    if parts.username is not None:
        raise InvalidURL("URL host is not valid (credentials in the URL)", url=raw)
    host = _host(parts.hostname, raw)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    try:
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
        query = quote(parts.query, safe="/%:@!$&'()*+,;=?~-._")
    except UnicodeError:
        raise InvalidURL("URL is not valid text (unpaired surrogates)", url=raw) from None
    return urlunsplit((scheme, netloc.lower(), path, query, ""))


def _host(hostname: str | None, raw: str) -> str:
    """The host in ASCII (IDNA), refusing empty labels, escapes and whitespace."""
    if not hostname:
        raise InvalidURL("URL has no host", url=raw)
    try:
        host = hostname if hostname.isascii() else hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidURL("host name is not valid", url=raw) from None
    if any(c in host for c in " \t\r\n%\\"):
        raise InvalidURL("URL host is not valid (spaces or escapes)", url=raw)
    if ":" not in host and any(label == "" for label in host.removesuffix(".").split(".")):
        raise InvalidURL("host name is not valid (empty label)", url=raw)
    return host


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Origin:
    """Opens URLs: checks, connects to the checked address, follows redirects, checks status."""

    def __init__(self, options: OriginOptions, scope: CancelScope | None = None,
                 pool: ConnectionPool | None = None) -> None:
        self.options = options
        self.scope = scope or CancelScope()
        self.pool = pool or ConnectionPool(per_host=8)
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
            body.drain()
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
        """One GET, on an idle kept-alive connection to the host if there is one."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        if not self.options.host_allowed(key[1]):
            raise BlockedAddress(f"host {key[1]} is not in ALLOWED_HOSTS", url=url)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        headers = _request_headers(parts.netloc)
        conn = self.pool.take(key)
        if conn is not None:
            try:
                return self._exchange(conn, key, url, target, headers, deadline, fresh=False)
            except _StaleConnection:
                log.debug("idle connection to %s was closed by the origin; reconnecting", key[1])
        if deadline.expired() or self.scope.cancelled.is_set():
            raise DeadlineExceeded("deadline reached before connecting", url=url)
        infos = resolve(key[1], key[2], self.options)
        conn = new_connection(key, infos, deadline.bound(self.options.connect_timeout), self._tls,
                              self.pool.session(key))
        return self._exchange(conn, key, url, target, headers, deadline, fresh=True)

    def _exchange(self, conn: http.client.HTTPConnection, key: PoolKey, url: str, target: str,
                  headers: dict[str, str], deadline: Deadline, fresh: bool) -> OriginBody:
        sock = None
        try:
            if fresh:
                conn.connect()
            sock = conn.sock  # kept: getresponse() drops conn.sock when the origin says close
            self.scope.add(sock)
            sock.settimeout(deadline.bound(self.options.read_timeout))
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
        except BaseException as exc:
            if sock is not None:
                self.scope.discard(sock)
            conn.close()
            if not fresh and isinstance(exc, _STALE_ERRORS) and not self.scope.cancelled.is_set():
                raise _StaleConnection() from None
            raise self._request_error(exc, url, deadline) from None
        release = self._releaser(key, conn, sock, response)
        return OriginBody(url, response, sock, deadline, self.options.read_timeout,
                          self.options.max_bytes, self.scope.cancelled, release)

    def _releaser(self, key: PoolKey, conn: http.client.HTTPConnection, sock: socket.socket,
                  response: http.client.HTTPResponse) -> Callable[[bool], None]:
        """What the body calls when done: back to the pool after a clean end, else closed."""
        def release(reusable: bool) -> None:
            self.scope.discard(sock)
            if reusable:
                self.pool.remember_session(key, sock)
            response.close()  # read to its end when reusable, so the stream is clean for the next
            if reusable and not response.will_close and conn.sock is not None:
                self.pool.give(key, conn)
                return
            conn.close()
            sock.close()
        return release

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


def _checked_encoding(body: OriginBody) -> OriginBody:
    """We ask for identity; a compressed body would be stored as bytes no viewer expects."""
    encoding = body.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    body.close()
    raise BadResponse(f"origin sent Content-Encoding {encoding!r} although none was asked for", url=body.url)


def _request_headers(netloc: str) -> dict[str, str]:
    return {"Host": netloc, "User-Agent": USER_AGENT, "Accept": "image/*,*/*;q=0.5",
            "Accept-Encoding": "identity"}


def _checked_status(body: OriginBody) -> OriginBody:
    if 200 <= body.status < 300 and body.status not in (204, 206):
        return _checked_encoding(body)
    retry_after = _retry_after(body.headers.get("Retry-After"))
    body.drain()
    body.close()
    raise HTTPStatusError(body.status, body.reason, url=body.url, retry_after=retry_after)
