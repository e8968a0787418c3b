"""Connections to origins: pinned to checked addresses, kept alive and reused per host, and
registered with a CancelScope while in use so the deadline can unblock them all at once."""
from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections import OrderedDict

from errors import DeadlineExceeded

PoolKey = tuple[str, str, int]  # scheme, host, port


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
                 context: ssl.SSLContext, session: ssl.SSLSession | None) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._infos = infos
        self._session = session

    def connect(self) -> None:
        raw = _connect(self._infos, self.timeout)
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self.host, session=self._session)
        except ssl.SSLError:
            if self._session is None:
                raw.close()
                raise
            self._session = None  # a stale ticket must not cost the request: full handshake
            self.sock = self._context.wrap_socket(_connect(self._infos, self.timeout),
                                                  server_hostname=self.host)
            raw.close()
        except BaseException:
            raw.close()
            raise


def new_connection(key: PoolKey, infos: list[tuple], timeout: float, tls: ssl.SSLContext,
                   session: ssl.SSLSession | None) -> http.client.HTTPConnection:
    scheme, host, port = key
    if scheme == "https":
        return _PinnedHTTPSConnection(host, port, infos, timeout, tls, session)
    return _PinnedHTTPConnection(host, port, infos, timeout)


def quiet(sock: socket.socket) -> bool:
    """True when nothing is waiting on an idle socket: no stray bytes, no end-of-stream.
    TLS may deliver records that carry no data (session tickets); those do not count."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    if not readable:
        return True
    if not isinstance(sock, ssl.SSLSocket):
        return False
    try:
        sock.settimeout(0)
        sock.recv(1)
    except ssl.SSLWantReadError:
        return True
    except OSError:
        return False
    return False


class ConnectionPool:
    """Idle keep-alive connections per (scheme, host, port), at most `per_host` each.

    A connection comes back here only after its response body was read to the end, so the next
    request on it starts on a clean stream. TLS sessions are remembered per host so a new
    connection to a host seen before can resume instead of doing a full handshake.
    """

    def __init__(self, per_host: int) -> None:
        self.per_host = max(1, per_host)
        self._lock = threading.Lock()
        self._idle: dict[PoolKey, list[http.client.HTTPConnection]] = {}
        self._sessions: OrderedDict[PoolKey, ssl.SSLSession] = OrderedDict()

    def take(self, key: PoolKey) -> http.client.HTTPConnection | None:
        """An idle connection that has received nothing since its last response, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
            if conn.sock is not None and quiet(conn.sock):
                return conn
            conn.close()  # closed by the origin, or bytes nobody asked for: never reuse

    def remember_session(self, key: PoolKey, sock: socket.socket) -> None:
        """Keep the TLS session (tickets arrive after the handshake, so call this after a read)."""
        session = getattr(sock, "session", None)
        if session is None:
            return
        with self._lock:
            self._sessions[key] = session
            self._sessions.move_to_end(key)
            while len(self._sessions) > 256:
                self._sessions.popitem(last=False)

    def give(self, key: PoolKey, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.per_host:
                idle.append(conn)
                return
        conn.close()

    def session(self, key: PoolKey) -> ssl.SSLSession | None:
        with self._lock:
            return self._sessions.get(key)

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
