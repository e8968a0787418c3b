"""A real socket server for origins that misbehave in ways a well-behaved HTTP server cannot:
truncated bodies, stalls, trickles, endless bodies, resets, lying Content-Length.

Each behaviour is a path; query parameters tune it. Bodies start with JPEG magic bytes so they get
past content sniffing and exercise the streaming path.
"""
from __future__ import annotations

import hashlib
import socket
import socketserver
import struct
import threading
import time
from urllib.parse import parse_qs, urlsplit

JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def image_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that sniff as JPEG."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    body = JPEG_HEAD + (block * (size // len(block) + 1))
    return body[:size]


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        self.server.owner._count_connection()
        reader = self.request.makefile("rb")
        while True:
            line = reader.readline(65536)
            if not line:
                return
            path = line.split()[1].decode()
            while reader.readline(65536) not in (b"\r\n", b"\n", b""):
                pass
            self.server.owner.requests.append(path)
            parts = urlsplit(path)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            behaviour = getattr(self, "do_" + parts.path.strip("/").replace("-", "_"), None)
            keep = behaviour(params) if behaviour else self._send(404, b"no such behaviour")
            if not keep:
                return

    # helpers -----------------------------------------------------------------------------------
    def _head(self, status: int = 200, length: int | None = None, extra: str = "") -> None:
        headers = f"HTTP/1.1 {status} X\r\nContent-Type: image/jpeg\r\n{extra}"
        if length is not None:
            headers += f"Content-Length: {length}\r\n"
        self.request.sendall((headers + "\r\n").encode())

    def _send(self, status: int, body: bytes, extra: str = "") -> bool:
        self._head(status, len(body), extra)
        self.request.sendall(body)
        return True

    def _stopping(self, seconds: float) -> bool:
        return self.server.owner.stopped.wait(seconds)

    # behaviours: return True to keep the connection open for another request ---------------------
    def do_ok(self, p: dict) -> bool:
        return self._send(200, image_bytes(int(p.get("size", 1000)), int(p.get("seed", 0))))

    def do_ok_then_hang_up(self, p: dict) -> bool:
        """A normal keep-alive answer, after which the server closes the idle connection anyway."""
        self._send(200, image_bytes(int(p.get("size", 1000)), int(p.get("seed", 0))))
        return False

    def do_double(self, p: dict) -> bool:
        """Two complete responses to one request: the second must never answer another URL."""
        size = int(p.get("size", 1000))
        first = image_bytes(size, 1)
        second = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % size
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                             % size + first + second + image_bytes(size, 666))
        return True

    def do_no_content_then_smuggle(self, p: dict) -> bool:
        """A 204 followed at once by an image nobody asked for."""
        smuggled = image_bytes(2000, 666)
        self.request.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 2000\r\n\r\n"
                             + smuggled)
        return True

    def do_partial(self, p: dict) -> bool:
        body = image_bytes(2500)
        return self._send(206, body, "Content-Range: bytes 0-2499/5000\r\n")

    def do_gzip(self, p: dict) -> bool:
        import gzip
        return self._send(200, gzip.compress(image_bytes(3000)), "Content-Encoding: gzip\r\n")

    def do_truncate(self, p: dict) -> bool:
        """Declares `declared` bytes, sends `send` bytes, closes."""
        body = image_bytes(int(p["send"]))
        self._head(200, int(p["declared"]))
        self.request.sendall(body)
        return False

    def do_overlong(self, p: dict) -> bool:
        """Declares `declared` bytes but sends `send` (more), then closes."""
        self._head(200, int(p["declared"]))
        self.request.sendall(image_bytes(int(p["send"])))
        return False

    def do_close_delimited(self, p: dict) -> bool:
        """No Content-Length: the body ends when the connection closes (HTTP/1.0 style)."""
        self._head(200, None, "Connection: close\r\n")
        self.request.sendall(image_bytes(int(p.get("size", 1000))))
        return False

    def do_chunked(self, p: dict) -> bool:
        body = image_bytes(int(p.get("size", 100_000)), int(p.get("seed", 0)))
        step = int(p.get("chunk", 7000))
        cut = int(p.get("cut", -1))  # stop (and close) after this many body bytes
        self._head(200, None, "Transfer-Encoding: chunked\r\n")
        for start in range(0, len(body), step):
            if 0 <= cut <= start:
                return False
            piece = body[start:start + step]
            self.request.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.request.sendall(b"0\r\n\r\n")
        return True

    def do_stall(self, p: dict) -> bool:
        """Accepts, reads the request, and never answers."""
        self._stopping(float(p.get("seconds", 60)))
        return False

    def do_slow(self, p: dict) -> bool:
        """Waits `delay` seconds, then answers normally."""
        if self._stopping(float(p.get("delay", 1))):
            return False
        return self.do_ok(p)

    def do_stall_after(self, p: dict) -> bool:
        """Declares `size` bytes, sends `after` of them, then goes silent with the socket open."""
        size, after = int(p["size"]), int(p["after"])
        self._head(200, size)
        self.request.sendall(image_bytes(size)[:after])
        self._stopping(float(p.get("seconds", 60)))
        return False

    def do_trickle(self, p: dict) -> bool:
        """Headers at once, then one byte every `interval` seconds."""
        size, interval = int(p.get("size", 1000)), float(p.get("interval", 0.5))
        self._head(200, size)
        for byte in image_bytes(size):
            if self._stopping(interval):
                return False
            self.request.sendall(bytes([byte]))
        return True

    def do_endless(self, p: dict) -> bool:
        """A body that never ends, as fast as the client reads it."""
        self._head(200, None, "Connection: close\r\n")
        block = image_bytes(64 * 1024)
        try:
            while not self.server.owner.stopped.is_set():
                self.request.sendall(block)
        except OSError:
            pass
        return False

    def do_reset(self, p: dict) -> bool:
        """Sends `after` bytes of a larger declared body, then a TCP reset."""
        after = int(p.get("after", 10_000))
        self._head(200, after * 2)
        self.request.sendall(image_bytes(after))
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    def do_status(self, p: dict) -> bool:
        extra = f"Retry-After: {p['retry_after']}\r\n" if "retry_after" in p else ""
        return self._send(int(p["code"]), b"status body", extra)

    def do_redirect(self, p: dict) -> bool:
        return self._send(int(p.get("code", 302)), b"", f"Location: {p['to']}\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "RawOrigin"


class RawOrigin:
    """Start with `RawOrigin().start()`; `url('/trickle?size=10')` gives a fetchable URL."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.stopped = threading.Event()
        self.requests: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self

    def _count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def start(self) -> "RawOrigin":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()
        time.sleep(0)
