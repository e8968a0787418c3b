"""A fault-injecting reverse proxy between boto3 and moto's S3 server.

Why a proxy rather than botocore event hooks: faults then happen on the wire, so botocore's real
retry logic, its connection handling after a reset, and s3transfer's cleanup all run exactly as
they would against S3. Rules pick an S3 operation (and optionally a key) and a fault: an S3 error
status with its XML body, or a TCP reset with no answer at all.
"""
from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

ERRORS = {503: ("SlowDown", "Please reduce your request rate."),
          500: ("InternalError", "We encountered an internal error. Please try again.")}
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def operation(method: str, path: str) -> str:
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    return f"{method}"


@dataclass
class Rule:
    op: str
    fault: int | str  # 503, 500 or "reset"
    times: int
    key_part: str = ""


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream).netloc
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str]] = []  # (operation, path) of every request
        self.injected: list[tuple[str, object]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                owner._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    def start(self) -> "FaultProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, op: str, fault: int | str, times: int = 1, key_part: str = "") -> None:
        self.rules.append(Rule(op, fault, times, key_part))

    def _take_rule(self, op: str, path: str) -> Rule | None:
        with self._lock:
            self.seen.append((op, path))
            for rule in self.rules:
                if rule.op == op and rule.times > 0 and rule.key_part in path:
                    rule.times -= 1
                    self.injected.append((op, rule.fault))
                    return rule
        return None

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        body = _read_body(h)
        rule = self._take_rule(operation(h.command, h.path), h.path)
        if rule is not None and rule.fault == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()
            return
        if rule is not None:
            code, message = ERRORS[int(rule.fault)]
            xml = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            return _reply(h, int(rule.fault), {"Content-Type": "application/xml"}, xml.encode())
        self._forward(h, body)

    def _forward(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_HEADERS}
        headers["Content-Length"] = str(len(body))
        try:
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_HEADERS}
            _reply(h, resp.status, out, data, head=h.command == "HEAD")
        finally:
            conn.close()


def _read_body(h: http.server.BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    return h.rfile.read(int(h.headers.get("Content-Length") or 0))


def _reply(h, status: int, headers: dict, body: bytes, head: bool = False) -> None:
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if not head:
        h.wfile.write(body)
