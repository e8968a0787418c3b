"""Pure functions: key derivation, content sniffing, URL normalisation."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from keys import check_explicit_key, derive_key, metadata_url
from origin import normalize_url
from sniff import choose_content_type, sniff
from conftest import SAMPLES


@pytest.mark.parametrize("url, key", [
    ("https://cdn.example.com/a/cat.jpg", "img/cdn.example.com/a/cat.jpg"),
    ("http://cdn.example.com/a/cat.jpg", "img/cdn.example.com/a/cat.jpg"),  # scheme is not identity
    ("https://CDN.Example.com/a/cat.jpg", "img/cdn.example.com/a/cat.jpg"),
    ("https://cdn.example.com:8443/a/cat.jpg", "img/cdn.example.com_8443/a/cat.jpg"),
    ("https://cdn.example.com:443/a/cat.jpg", "img/cdn.example.com/a/cat.jpg"),
    ("https://cdn.example.com/a/cat.jpg#frag", "img/cdn.example.com/a/cat.jpg"),
])
def test_plain_urls_keep_host_and_path(url, key):
    assert derive_key(normalize_url(url), "img/") == key


@pytest.mark.parametrize("url, shape", [
    ("https://x.org/a.png?v=2", r"x\.org/a![0-9a-f]{16}\.png"),
    ("https://x.org/dir/", r"x\.org/dir/index![0-9a-f]{16}"),
    ("https://x.org", r"x\.org/index![0-9a-f]{16}"),
    ("https://x.org/a/../../etc/passwd", r"x\.org/a/etc/passwd![0-9a-f]{16}"),
    ("https://x.org/caf%C3%A9 au lait.jpg", r"x\.org/café_au_lait![0-9a-f]{16}\.jpg"),
    ("https://[2001:db8::1]/a.jpg", r"2001_db8_1/a![0-9a-f]{16}\.jpg"),
])
def test_other_urls_get_a_readable_stem_and_a_digest(url, shape):
    import re
    key = derive_key(normalize_url(url))
    assert re.fullmatch(shape, key), key
    assert "?" not in key and "/../" not in key and not key.endswith("/")


@pytest.mark.parametrize("a, b", [
    ("https://one.example/3.jpg", "https://two.example/3.jpg"),
    ("https://x.org/a.png?v=2", "https://x.org/a.png?v=3"),
    ("https://x.org/a.png", "https://x.org/a.png?v=2"),
    ("https://x.org/dir/", "https://x.org/dir/index"),
    ("https://x.org/a%20b.jpg", "https://x.org/a_b.jpg"),
    ("https://x.org:8080/a.jpg", "https://x.org/a.jpg"),
    ("http://a.example.com:8080/x.jpg?v=1", "http://a.example.com_8080/x.jpg?v=1"),
    ("http://a.example.com:8080/d/", "http://a.example.com_8080/d/"),
])
def test_distinct_urls_get_distinct_keys(a, b):
    assert derive_key(normalize_url(a)) != derive_key(normalize_url(b))


url_paths = st.lists(st.text(alphabet="abcAB09._-~%/?=&é ", min_size=0, max_size=12), min_size=1, max_size=4)


@given(url_paths, url_paths)
def test_key_derivation_is_deterministic_and_injective(p1, p2):
    u1 = normalize_url("https://h.example/" + "/".join(p1))
    u2 = normalize_url("https://h.example/" + "/".join(p2))
    assert derive_key(u1) == derive_key(u1)
    if u1 != u2:
        assert derive_key(u1) != derive_key(u2)
    key = derive_key(u1)
    assert "?" not in key and ".." not in key.split("/") and key.split("/")[-1]


@pytest.mark.parametrize("url, prefix", [
    ("https://x.org/" + "a" * 3000 + ".jpg?q=" + "b" * 3000, "p/"),
    ("https://x.org/" + "a" * 1100 + ".jpg", ""),                       # plain, but too long
    ("https://x.org/" + "/".join(["seg"] * 200) + ".jpg?v=1", ""),      # many segments
    ("https://x.org/" + "é" * 600 + ".jpg?v=1", "é" * 256),             # multi-byte everywhere
])
def test_very_long_url_key_fits_s3_limit(url, prefix):
    key = derive_key(normalize_url(url), prefix)
    assert len(key.encode()) <= 1024 and key.endswith(".jpg") and key.startswith(prefix + "x.org/")


@pytest.mark.parametrize("key, ok", [
    ("custom/p.png", True), ("", False), ("/abs.png", False), ("a/../b.png", False),
    ("./b.png", False), ("x" * 1030, False), ("dir/", False), ("a//b.jpg", False),
    ("a\udc80.jpg", False), ("a?b=1.jpg", True),
])
def test_explicit_key_checks(key, ok):
    assert (check_explicit_key(key, "images/") is None) is ok


def test_metadata_url_is_ascii_and_bounded():
    value = metadata_url(normalize_url("https://x.org/ünïcode.jpg?" + "q" * 5000))
    assert value.isascii() and len(value) <= 1800 and value.startswith("https://x.org/%C3%BC")


@pytest.mark.parametrize("name, mime", [
    ("sunset.jpg", "image/jpeg"), ("diagram.png", "image/png"), ("icon.gif", "image/gif"),
    ("product.webp", "image/webp"), ("banner.avif", "image/avif"), ("logo.svg", "image/svg+xml"),
])
def test_sniff_real_samples(name, mime):
    assert sniff((SAMPLES / name).read_bytes()[:1024]) == mime


@pytest.mark.parametrize("declared, head, chosen", [
    ("image/jpeg", b"\xff\xd8\xff\xe0", "image/jpeg"),
    ("image/jpeg; charset=x", b"\x89PNG\r\n\x1a\n", "image/jpeg"),          # origin's image type wins
    ("application/octet-stream", b"\x89PNG\r\n\x1a\n", "image/png"),         # generic: bytes decide
    ("", b"GIF89a....", "image/gif"),
    ("text/plain", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),          # bytes are an image
    ("image/x-portable-pixmap", b"P6\n3 2\n255\n", "image/x-portable-pixmap"),  # unknown to us, trusted
    ("image/png", b"<!doctype html><html>", None),                           # an error page
    ("text/html", b"<html><body>", None),
    ("application/octet-stream", b"\x00\x01garbage", None),
    ("image/png", b"", None),                                                # empty body
    ("", b"\xef\xbb\xbf<?xml version='1.0'?>\n<!-- c -->\n<svg xmlns=''>", "image/svg+xml"),
])
def test_choose_content_type(declared, head, chosen):
    assert choose_content_type(declared, head) == chosen


@pytest.mark.parametrize("raw, normal", [
    ("  https://x.org/a.jpg\n", "https://x.org/a.jpg"),
    ("HTTPS://X.ORG/a.jpg", "https://x.org/a.jpg"),
    ("https://bücher.example/ä.jpg", "https://xn--bcher-kva.example/%C3%A4.jpg"),
    ("https://x.org/a b.jpg?q=1 2", "https://x.org/a%20b.jpg?q=1%202"),
])
def test_normalize_url(raw, normal):
    assert normalize_url(raw) == normal
