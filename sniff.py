"""Recognise image formats from their first bytes, and pick the Content-Type to store.

The origin's word is trusted when it names an image type and the bytes do not contradict it; when
the origin says nothing useful the bytes decide; a body that is recognisably not an image is
refused whatever the origin claims.
"""
from __future__ import annotations

import re

SNIFF_BYTES = 1024  # how much of the body is looked at before the upload starts
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\xff\x0a", "image/jxl"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "image/jxl"),
)
_FTYP_BRANDS = {b"avif": "image/avif", b"avis": "image/avif", b"heic": "image/heic",
                b"heix": "image/heic", b"mif1": "image/heif", b"msf1": "image/heif"}
_MARKUP_START = re.compile(rb"^(?:<\?xml[^>]*>|<!--.*?-->|<!doctype svg[^>]*>|\s)*", re.I | re.S)


def _sniff_binary(head: bytes) -> str | None:
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    return None


def _sniff_markup(head: bytes) -> str | None:
    """'image/svg+xml' for SVG, 'text/html' for HTML-ish text, else None."""
    text = head.lstrip(b"\xef\xbb\xbf")
    text = text[_MARKUP_START.match(text).end():]
    lowered = text[:256].lower()
    if lowered.startswith(b"<svg"):
        return "image/svg+xml"
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!doctype", b"<?php")):
        return "text/html"
    if lowered.startswith(b"<") or lowered.startswith((b"{", b"[")):
        return "text/html" if b"<html" in head.lower() else "text/plain"
    return None


def sniff(head: bytes) -> str | None:
    """The media type the first bytes show, or None when they are not recognised."""
    return _sniff_binary(head) or _sniff_markup(head)


def choose_content_type(declared: str, head: bytes) -> str | None:
    """The Content-Type to store, or None when the body must be refused as not an image."""
    declared_type = declared.split(";", 1)[0].strip().lower()
    seen = sniff(head)
    if seen is not None and not seen.startswith("image/"):
        return None  # HTML, JSON, text: not an image whatever the header says
    if declared_type.startswith("image/") and head:
        return declared_type
    return seen
