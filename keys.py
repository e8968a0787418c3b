"""Object keys derived from URLs, and the URL kept in object metadata.

A derived key is `prefix + host + path` when that spelling is unambiguous (a plain host, an
unreserved-character path, no query). Any other URL gets a readable stem plus `!` and 16 hex digits
of SHA-256 over the normalised URL. `!` never occurs in the plain form, so the two forms cannot
collide, and the digest keeps distinct URLs on distinct keys.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from urllib.parse import SplitResult, unquote, urlsplit

MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
MAX_METADATA_URL = 1800  # S3 allows 2 KB of user metadata in all
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PLAIN_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
_UNSAFE = re.compile(r"[^\w.~-]+")


def host_label(parts: SplitResult) -> str:
    """Host, plus `_port` when the port is not the scheme's default."""
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme.lower()):
        return host
    return f"{host}_{port}"


def _identity(parts: SplitResult) -> str:
    """Host, port, path and query, joined so that no two URLs give the same string."""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return json.dumps([(parts.hostname or "").lower(), port, parts.path, parts.query])


def _is_plain(parts: SplitResult) -> bool:
    if parts.query or not _PLAIN_HOST.fullmatch((parts.hostname or "").lower()):
        return False
    if not _PLAIN_PATH.fullmatch(parts.path):
        return False
    return not any(seg in (".", "..") for seg in parts.path.split("/"))


def _readable_segments(path: str) -> list[str]:
    """Path segments made safe: decoded, odd characters folded to `_`, no dot segments."""
    segments = []
    for raw in unquote(path).split("/"):
        seg = _UNSAFE.sub("_", raw).strip("_") or ""
        if seg and seg not in (".", ".."):
            segments.append(seg)
    return segments


def derive_key(url: str, prefix: str = "") -> str:
    """The deterministic key for `url` (already normalised by the origin layer)."""
    parts = urlsplit(url)
    host = host_label(parts)
    if _is_plain(parts) and len(f"{prefix}{host}{parts.path}".encode("utf-8")) <= MAX_KEY_BYTES:
        return f"{prefix}{host}{parts.path}"
    digest = hashlib.sha256(_identity(parts).encode("utf-8")).hexdigest()[:16]
    segments = _readable_segments(parts.path)
    if not segments or parts.path.endswith("/"):
        segments.append("index")
    stem, ext = posixpath.splitext(segments[-1])
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,5}", ext):
        stem, ext = segments[-1], ""
    host_dir = _UNSAFE.sub("_", host).strip("_.") or "host"
    dirs = "/".join([host_dir, *(s[:100] for s in segments[:-1])])
    key = f"{prefix}{dirs}/{stem[:100]}!{digest}{ext}"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:  # keep the host, the digest and the extension
        room = MAX_KEY_BYTES - len(f"{prefix}/!{digest}{ext}".encode("utf-8"))
        key = f"{prefix}{_cut(dirs, room * 2 // 3)}/{_cut(stem, room // 3)}!{digest}{ext}"
    return key


def _cut(text: str, max_bytes: int) -> str:
    """`text` shortened to at most `max_bytes` of UTF-8 without splitting a character."""
    return text.encode("utf-8")[:max(0, max_bytes)].decode("utf-8", "ignore").rstrip("/")


def check_explicit_key(key: str, prefix: str) -> str | None:
    """Why an explicit key cannot be used, or None when it can."""
    if not key or key.startswith("/") or key.endswith("/"):
        return "key must be non-empty and must not start or end with '/'"
    if any(seg in ("", ".", "..") for seg in key.split("/")):
        return "key must not contain empty, '.' or '..' segments"
    try:
        size = len((prefix + key).encode("utf-8"))
    except UnicodeError:
        return "key is not valid text (unpaired surrogates)"
    if size > MAX_KEY_BYTES:
        return f"prefix + key is longer than {MAX_KEY_BYTES} bytes"
    return None


def metadata_url(url: str) -> str:
    """The source URL as ASCII for S3 user metadata, cut to fit the 2 KB metadata limit."""
    ascii_url = url.encode("ascii", "backslashreplace").decode("ascii")
    return ascii_url[:MAX_METADATA_URL]
