"""The benchmark's origin: an asyncio HTTP/1.1 server that behaves like a distant image host.

Run as its own process by bench/run.py (never imported by contenders). Latency model, per
connection:

* the first request on a new connection waits CONNECT_DELAY + TTFB before its response starts
  (stands in for the TCP and TLS handshake round trips a real client pays before it can even send);
* every later request on the same keep-alive connection waits only TTFB;
* an optional per-connection bandwidth cap paces the body.

Paths (all GET or HEAD):

  /sets/n<N>-h<H>-k<K>/           HTML listing of the images i < N with i % H == K
  /sets/n<N>-h<H>-k<K>/<name>     the cached image <name> (the set part only groups URLs)
  /big/<mode>-<bytes>-n<C>/       HTML listing of 0.jpg .. C-1.jpg
  /big/<mode>-<bytes>-n<C>/<i>.jpg  <bytes> generated on the fly; mode is
                                  cl (Content-Length), chunked, or close (close-delimited)
  /__stats                        JSON counters and this process's CPU seconds (not counted)
  /__reset                        zero the counters (not counted)

It prints one JSON line ({"listeners": [...], "pid": ...}) on stdout when it is listening and
exits on SIGTERM/SIGINT or when its stdin reaches end-of-file (the harness holds the other end).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

JPEG_MAGIC = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"
BLOCK_SIZE = 1024 * 1024
PACE_CHUNK = 64 * 1024
SET_PATH = re.compile(r"^/sets/n(\d+)-h(\d+)-k(\d+)/([^/]*)$")
BIG_PATH = re.compile(r"^/big/(cl|chunked|close)-(\d+)-n(\d+)/([^/]*)$")
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def _block() -> bytes:
    """1 MiB of incompressible bytes that sniff as JPEG; repeated to build large bodies."""
    rest = random.Random(20240501).randbytes(BLOCK_SIZE - len(JPEG_MAGIC))
    return JPEG_MAGIC + rest


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.head_requests = 0
        self.connections = 0
        self.bytes_sent = 0
        self.not_found = 0
        self.max_open_connections = 0
        self.per_listener: dict[str, dict[str, int]] = {}

    def snapshot(self, open_now: int) -> dict:
        return {"requests": self.requests, "head_requests": self.head_requests,
                "connections": self.connections, "bytes_sent": self.bytes_sent,
                "not_found": self.not_found, "open_connections": open_now,
                "max_open_connections": self.max_open_connections,
                "per_listener": self.per_listener,
                "cpu_s": round(time.process_time(), 3), "pid": os.getpid()}


class Origin:
    def __init__(self, images_dir: Path, names: list[str], ttfb: float, connect_delay: float,
                 bandwidth: float) -> None:
        self.images_dir = images_dir
        self.names = names  # corpus order: index i is names[i]
        self.ttfb, self.connect_delay, self.bandwidth = ttfb, connect_delay, bandwidth
        self.cache: dict[str, bytes] = {}
        self.block = memoryview(_block())
        self.counters = Counters()
        self.open_connections = 0

    def load(self) -> None:
        for name in self.names:
            self.cache[name] = (self.images_dir / name).read_bytes()

    # -- connection loop --------------------------------------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, label: str) -> None:
        counted = False
        first = True
        self.open_connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                try:
                    method, target, version, headers = _parse(head)
                except ValueError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                path = target.split("?", 1)[0]
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                if version == "HTTP/1.0" and headers.get("connection", "").lower() == "keep-alive":
                    keep = True
                if path.startswith("/__"):
                    if not await self._control(path, writer, keep):
                        return
                    continue
                if not counted:
                    counted = True
                    self.counters.connections += 1
                    per = self.counters.per_listener.setdefault(label, {"requests": 0, "connections": 0})
                    per["connections"] += 1
                    self.counters.max_open_connections = max(self.counters.max_open_connections,
                                                             self.open_connections)
                self.counters.requests += 1
                self.counters.per_listener.setdefault(label, {"requests": 0, "connections": 0})["requests"] += 1
                if method == "HEAD":
                    self.counters.head_requests += 1
                await asyncio.sleep(self.ttfb + (self.connect_delay if first else 0.0))
                first = False
                if not await self._respond(method, path, writer, keep):
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self.open_connections -= 1
            try:
                writer.close()
            except Exception:
                pass

    async def _control(self, path: str, writer: asyncio.StreamWriter, keep: bool) -> bool:
        if path == "/__reset":
            self.counters.reset()
        body = json.dumps(self.counters.snapshot(self.open_connections)).encode()
        await self._send_head(writer, 200, "application/json", len(body), keep)
        writer.write(body)
        await writer.drain()
        return keep

    async def _send_head(self, writer: asyncio.StreamWriter, status: int, ctype: str,
                         length: int | None, keep: bool, chunked: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}",
                 f"Content-Type: {ctype}", "Server: bench-origin"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        lines.append("Connection: keep-alive" if keep else "Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def _respond(self, method: str, path: str, writer: asyncio.StreamWriter, keep: bool) -> bool:
        """Send one response; return whether the connection stays open."""
        m = SET_PATH.match(path)
        if m:
            n, h, k, name = int(m[1]), int(m[2]), int(m[3]), m[4]
            if not name:
                names = [self.names[i] for i in range(min(n, len(self.names))) if h and i % h == k]
                return await self._listing(method, writer, keep, names)
            data = self.cache.get(name)
            if data is not None:
                ctype = CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")
                return await self._body(method, writer, keep, ctype, data)
        m = BIG_PATH.match(path)
        if m:
            mode, size, count, name = m[1], int(m[2]), int(m[3]), m[4]
            if not name:
                return await self._listing(method, writer, keep, [f"{i}.jpg" for i in range(count)])
            if re.fullmatch(r"\d+\.jpg", name) and int(name[:-4]) < count:
                return await self._big(method, writer, keep, mode, size)
        self.counters.not_found += 1
        body = b"not found"
        await self._send_head(writer, 404, "text/plain", len(body), keep)
        if method != "HEAD":
            writer.write(body)
        await writer.drain()
        return keep

    async def _listing(self, method: str, writer, keep: bool, names: list[str]) -> bool:
        rows = "".join(f'<a href="{n}">{n}</a>\n' for n in names)
        body = f"<html><body><pre>\n{rows}</pre></body></html>\n".encode()
        return await self._body(method, writer, keep, "text/html; charset=utf-8", body)

    async def _body(self, method: str, writer, keep: bool, ctype: str, data: bytes) -> bool:
        await self._send_head(writer, 200, ctype, len(data), keep)
        if method != "HEAD":
            await self._write(writer, memoryview(data))
        await writer.drain()
        return keep

    async def _big(self, method: str, writer, keep: bool, mode: str, size: int) -> bool:
        if mode == "close":
            keep = False
        await self._send_head(writer, 200, "image/jpeg", size if mode == "cl" else None, keep,
                              chunked=mode == "chunked")
        if method == "HEAD":
            await writer.drain()
            return keep
        left = size
        while left > 0:
            n = min(left, BLOCK_SIZE)
            if mode == "chunked":
                writer.write(f"{n:x}\r\n".encode())
            await self._write(writer, self.block[:n])
            if mode == "chunked":
                writer.write(b"\r\n")
            left -= n
        if mode == "chunked":
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return keep

    async def _write(self, writer: asyncio.StreamWriter, data: memoryview) -> None:
        """Write `data`, paced to the bandwidth cap when there is one."""
        if not self.bandwidth:
            writer.write(data)
            self.counters.bytes_sent += len(data)
            await writer.drain()
            return
        started = time.monotonic()
        for offset in range(0, len(data), PACE_CHUNK):
            piece = data[offset:offset + PACE_CHUNK]
            writer.write(piece)
            self.counters.bytes_sent += len(piece)
            await writer.drain()
            ahead = (offset + len(piece)) / self.bandwidth - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)


def _parse(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
        raise ValueError(lines[0])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return parts[0], parts[1], parts[2], headers


async def _main(args: argparse.Namespace) -> None:
    manifest = json.loads((Path(args.images) / "manifest.json").read_text())
    origin = Origin(Path(args.images), [e["name"] for e in manifest["images"]], args.ttfb,
                    args.connect_delay, args.bandwidth)
    origin.load()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)

    servers, listeners = [], []
    port = args.port
    for host in args.hosts.split(","):
        label_holder: list[str] = []

        def handler(r, w, _l=label_holder):
            return origin.serve(r, w, _l[0])

        try:
            server = await asyncio.start_server(handler, host, port, backlog=4096, reuse_address=True)
        except OSError:
            # this host alias could not take the shared port: fall back to any free port
            server = await asyncio.start_server(handler, host, 0, backlog=4096, reuse_address=True)
        bound_host, bound_port = server.sockets[0].getsockname()[:2]
        if port == 0:
            port = bound_port
        label_holder.append(f"{bound_host}:{bound_port}")
        servers.append(server)
        listeners.append(label_holder[0])
    print(json.dumps({"listeners": listeners, "pid": os.getpid(), "images": len(origin.names)}), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="directory with manifest.json and the images")
    parser.add_argument("--hosts", default="127.0.0.1", help="comma list of loopback addresses to bind")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttfb", type=float, default=0.040, help="seconds before every response")
    parser.add_argument("--connect-delay", type=float, default=0.080,
                        help="extra seconds on the first request of a connection")
    parser.add_argument("--bandwidth", type=float, default=0.0,
                        help="bytes per second per connection; 0 = no cap")
    args = parser.parse_args()
    mimetypes.init()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
