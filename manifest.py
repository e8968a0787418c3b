"""A manifest in S3 (one URL per line, or JSON lines) read forward from a byte offset.

Why ranged GETs and not one GET: a manifest may hold millions of lines, one invocation has time
for a part of them, and memory must not grow with the file. The reader asks S3 for `chunk` bytes
at a time, only when the engine pulls the next item, and completes a line cut by a chunk boundary
from the next chunk. `offset` always points just after the last line handed out (or rejected), so
the next invocation starts exactly where this one stopped pulling.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from items import parse_text, rejected
from transfer import Item, Outcome

CHUNK_BYTES = 1024 * 1024
MAX_LINE_BYTES = 64 * 1024  # a longer line is rejected alone; no URL or item is that long
_TOTAL = re.compile(r"/(\d+)\s*$")
_BOM = b"\xef\xbb\xbf"


class ManifestReader:
    """Iterate to get Items; lines that are not items end up in `rejected` as failed outcomes."""

    def __init__(self, client: Any, bucket: str, key: str, offset: int = 0, etag: str | None = None,
                 chunk: int = CHUNK_BYTES) -> None:
        self.client, self.bucket, self.key, self.chunk = client, bucket, key, chunk
        self.start = offset
        self.offset = offset
        self.etag = etag  # pins the object: a manifest replaced mid-job must not shift the offsets
        self.size: int | None = None
        self.error: str | None = None
        self.rejected: list[Outcome] = []

    @property
    def eof(self) -> bool:
        """True once every line up to the end of the object has been handed out."""
        return self.error is None and self.size is not None and self.offset >= self.size

    def __iter__(self) -> Iterator[Item]:
        for start, end, raw in self._lines():
            self.offset = end
            item = self._parse(start, raw)
            if item is not None:
                yield item

    def _parse(self, start: int, raw: bytes | None) -> Item | None:
        where = f"manifest line at byte {start}"
        try:
            if raw is None:
                raise ValueError(f"{where} is longer than {MAX_LINE_BYTES} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{where} is not UTF-8 text") from None
            return parse_text(start, text, where)
        except ValueError as exc:
            self.rejected.append(rejected(start, raw.decode("utf-8", "replace")[:2000] if raw else where,
                                          str(exc)))
            return None

    def _lines(self) -> Iterator[tuple[int, int, bytes | None]]:
        """(start, end, bytes without the newline) per line; bytes is None for an over-long line."""
        buf, base, pos, long_from = b"", self.offset, 0, None
        while True:
            newline = buf.find(b"\n", pos)
            if newline >= 0:
                too_long = long_from is not None or newline - pos > MAX_LINE_BYTES
                line = None if too_long else _strip(buf[pos:newline], base + pos)
                yield (base + pos if long_from is None else long_from), base + newline + 1, line
                pos, long_from = newline + 1, None
                continue
            if len(buf) - pos > MAX_LINE_BYTES:  # keep memory bounded: drop the line's bytes
                long_from = base + pos if long_from is None else long_from
                base, buf, pos = base + len(buf), b"", 0
            chunk = self._fetch(base + len(buf))
            if chunk is None:
                return
            if not chunk:
                if pos < len(buf) or long_from is not None:  # a last line without a newline
                    line = None if long_from is not None else _strip(buf[pos:], base + pos)
                    yield (base + pos if long_from is None else long_from), base + len(buf), line
                return
            buf, base, pos = buf[pos:] + chunk, base + pos, 0

    def _fetch(self, start: int) -> bytes | None:
        """The next chunk from `start`; b"" at the end of the object; None after an error."""
        if self.size is not None and start >= self.size:
            return b""
        request = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{start + self.chunk - 1}"}
        if self.etag:
            request["IfMatch"] = self.etag
        try:
            response = self.client.get_object(**request)
            data = response["Body"].read()
        except ClientError as exc:
            return self._failed(start, exc)
        except BotoCoreError as exc:
            self.error = f"manifest s3://{self.bucket}/{self.key} could not be read: {exc}"[:400]
            return None
        self.etag = self.etag or response.get("ETag")
        total = _TOTAL.search(response.get("ContentRange") or "")
        self.size = int(total.group(1)) if total else (start + len(data) if len(data) < self.chunk else None)
        return data

    def _failed(self, start: int, exc: ClientError) -> bytes | None:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code == "InvalidRange":  # the offset is at (or past) the end: nothing left to read
            self.size = start
            return b""
        if code in ("PreconditionFailed", "412"):
            self.error = (f"manifest s3://{self.bucket}/{self.key} changed since the job started "
                          f"(ETag {self.etag}); its offsets no longer apply: start again from offset 0")
        else:
            self.error = (f"manifest s3://{self.bucket}/{self.key} could not be read: {code}: "
                          f"{error.get('Message', '')}")[:400]
        return None


def _strip(line: bytes, start: int) -> bytes:
    """Without a carriage return (CRLF files) and without a byte-order mark at the very start."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if start == 0 and line.startswith(_BOM):
        line = line[len(_BOM):]
    return line
