"""Object keys derived from URLs, and the URL kept in object metadata.

A derived key is `prefix + host + path` when that spelling is unambiguous (a plain host, an
unreserved-character path, no query). Any other URL gets a readable stem plus `!` and 16 hex digits
of SHA-256 over the normalised URL. `!` never occurs in the plain form, so the two forms cannot
collide, and the digest keeps distinct URLs on distinct keys.
"""
from __future__ import annotations

import hashlib
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
    if _is_plain(parts):
        return f"{prefix}{host}{parts.path}"
    identity = f"{host}{parts.path}?{parts.query}" if parts.query else f"{host}{parts.path}"
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    segments = _readable_segments(parts.path)
    if not segments or parts.path.endswith("/"):
        segments.append("index")
    stem, ext = posixpath.splitext(segments[-1])
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,5}", ext):
        stem, ext = segments[-1], ""
    dirs = "/".join([_UNSAFE.sub("_", host).strip("_") or "host", *(s[:100] for s in segments[:-1])])
    key = f"{prefix}{dirs}/{stem[:100]}!{digest}{ext}"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        key = f"{prefix}{dirs[:300]}/{stem[:50]}!{digest}{ext}"
    return key


def check_explicit_key(key: str, prefix: str) -> str | None:
    """Why an explicit key cannot be used, or None when it can."""
    if not key or key.startswith("/"):
        return "key must be non-empty and must not start with '/'"
    if any(seg in (".", "..") for seg in key.split("/")):
        return "key must not contain '.' or '..' segments"
    if len((prefix + key).encode("utf-8")) > MAX_KEY_BYTES:
        return f"prefix + key is longer than {MAX_KEY_BYTES} bytes"
    return None


def metadata_url(url: str) -> str:
    """The source URL as ASCII for S3 user metadata, cut to fit the 2 KB metadata limit."""
    ascii_url = url.encode("ascii", "backslashreplace").decode("ascii")
    return ascii_url[:MAX_METADATA_URL]
