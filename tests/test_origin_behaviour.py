"""One table per behaviour family: what the origin does -> what the caller sees and what S3 holds.
Every case runs through the handler against moto's HTTP server and checks that nothing partial
is left behind (no object for failures, no open multipart upload)."""
from __future__ import annotations

import pytest
from conftest import SAMPLES, keys_in, sha256, stored
from origins import image_bytes

PNG = (SAMPLES / "diagram.png").read_bytes()
BIG = 9 * 1024 * 1024  # above the 8 MiB part size: the multipart path


def _status(code: int):
    return lambda server: server.expect_request("/x").respond_with_data(b"nope", status=code)


@pytest.mark.parametrize("code, error, retryable", [
    (404, "HTTP 404 NOT FOUND", False),
    (403, "HTTP 403 FORBIDDEN", False),
    (410, "HTTP 410 GONE", False),
    (408, "HTTP 408 REQUEST TIMEOUT", True),
    (429, "HTTP 429 TOO MANY REQUESTS", True),
    (500, "HTTP 500 INTERNAL SERVER ERROR", True),
    (503, "HTTP 503 SERVICE UNAVAILABLE", True),
])
def test_error_status_writes_nothing(invoke, s3, bucket, httpserver, code, error, retryable):
    _status(code)(httpserver)
    response = invoke({"urls": [httpserver.url_for("/x")], "bucket": bucket})
    [failed] = response["failed"]
    assert failed["error"].upper() == error and failed["retryable"] is retryable
    assert keys_in(s3, bucket) == set()


@pytest.mark.parametrize("body, content_type", [
    (b"<!DOCTYPE html><html><body>Not found</body></html>", "text/html"),
    (b"<html><head><title>error</title></head></html>", "image/jpeg"),  # lying header
    (b'{"error": "expired"}', "application/json"),
    (b"plain words", "text/plain"),
    (b"\x00\x01\x02 unknown binary", "application/octet-stream"),
    (b"", "image/png"),
])
def test_non_image_body_is_refused(invoke, s3, bucket, httpserver, body, content_type):
    httpserver.expect_request("/page").respond_with_data(body, content_type=content_type)
    response = invoke({"urls": [httpserver.url_for("/page")], "bucket": bucket})
    [failed] = response["failed"]
    assert failed["error"].startswith("not an image") and failed["retryable"] is False
    assert keys_in(s3, bucket) == set()


def test_redirect_chain_is_followed(invoke, s3, bucket, httpserver):
    for code, src, dst in [(301, "/a", "/b"), (302, "/b", "/c"), (307, "/c", "/d"), (308, "/d", "/final.png")]:
        httpserver.expect_request(src).respond_with_data("", status=code, headers={"Location": dst})
    httpserver.expect_request("/final.png").respond_with_data(PNG, content_type="image/png")
    response = invoke({"urls": [httpserver.url_for("/a")], "bucket": bucket})
    [ok] = response["succeeded"]
    assert ok["key"].endswith("/a")  # the key follows the URL asked for, not where it led
    assert sha256(stored(s3, bucket, ok["key"])[0]) == sha256(PNG)


@pytest.mark.parametrize("routes, error", [
    ({"/loop1": "/loop2", "/loop2": "/loop1"}, "redirect loop"),
    ({"/self": "/self"}, "redirect loop"),
    ({f"/r{i}": f"/r{i + 1}" for i in range(7)}, "more than 5 redirects"),
])
def test_bad_redirects_fail_not_retryable(invoke, s3, bucket, httpserver, routes, error):
    for src, dst in routes.items():
        httpserver.expect_request(src).respond_with_data("", status=302, headers={"Location": dst})
    response = invoke({"urls": [httpserver.url_for(next(iter(routes)))], "bucket": bucket})
    [failed] = response["failed"]
    assert error in failed["error"] and failed["retryable"] is False
    assert keys_in(s3, bucket) == set()


@pytest.mark.parametrize("path, size", [
    ("/chunked?size=300000&chunk=7000", 300_000),
    (f"/chunked?size={BIG}&chunk=65536", BIG),
    ("/close-delimited?size=200000", 200_000),
    (f"/ok?size={BIG}", BIG),
])
def test_unknown_or_large_length_is_stored_exactly(invoke, s3, bucket, raw_origin, path, size):
    response = invoke({"urls": [raw_origin.url(path)], "bucket": bucket})
    [ok] = response["succeeded"]
    data, obj = stored(s3, bucket, ok["key"])
    assert ok["bytes"] == size == len(data)
    assert sha256(data) == sha256(image_bytes(size))


@pytest.mark.parametrize("path, fragment", [
    ("/truncate?declared=5000&send=3000", "truncated: got 3000 of 5000"),
    (f"/truncate?declared={BIG}&send={BIG - 1000}", f"truncated: got {BIG - 1000} of {BIG}"),
    ("/chunked?size=300000&chunk=7000&cut=140000", "body read failed"),
    (f"/chunked?size={BIG * 2}&chunk=65536&cut={BIG + 100}", "body read failed"),
    (f"/reset?after={BIG}", "body "),  # a reset reads as an error or as an early end: both fail
])
def test_truncated_body_leaves_nothing(invoke, s3, bucket, raw_origin, path, fragment):
    response = invoke({"urls": [raw_origin.url(path)], "bucket": bucket})
    [failed] = response["failed"]
    assert fragment in failed["error"] and failed["retryable"] is True
    assert keys_in(s3, bucket) == set()  # invoke() also checks no multipart upload is open


def test_connection_refused_is_retryable(invoke, bucket):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    response = invoke({"urls": [f"http://127.0.0.1:{port}/a.jpg"], "bucket": bucket})
    assert response["failed"] == [{"url": f"http://127.0.0.1:{port}/a.jpg",
                                   "error": "connection refused", "retryable": True}]


@pytest.mark.parametrize("path, error", [
    ("/partial", "HTTP 206"),                                     # a range we never asked for
    ("/gzip", "Content-Encoding 'gzip'"),                         # an encoding we never asked for
    ("/overlong?declared=30000&send=50000", "more than its Content-Length"),
])
def test_answers_we_did_not_ask_for_are_refused(invoke, s3, bucket, raw_origin, path, error):
    response = invoke({"urls": [raw_origin.url(path)], "bucket": bucket})
    [failed] = response["failed"]
    assert error in failed["error"] and failed["retryable"] is False
    assert keys_in(s3, bucket) == set()


@pytest.mark.parametrize("hostile", ["/double?size=1000", "/double?size=50000", "/no_content_then_smuggle"])
def test_kept_alive_connections_never_hand_one_url_another_urls_bytes(invoke, monkeypatch, s3, bucket,
                                                                      raw_origin, hostile):
    # GIVEN one worker, so every request after the hostile one would reuse its connection
    monkeypatch.setenv("WORKERS", "1")
    monkeypatch.setenv("ORIGIN_ATTEMPTS", "1")
    good = [raw_origin.url(f"/ok?size={3000 + i}&seed={i}") for i in range(4)]
    response = invoke({"urls": [raw_origin.url(hostile), *good], "bucket": bucket})
    # THEN every stored object holds the bytes of its own URL
    stored_urls = {r["url"]: r["key"] for r in response["succeeded"]}
    assert set(good) <= set(stored_urls)
    for i, url in enumerate(good):
        assert sha256(stored(s3, bucket, stored_urls[url])[0]) == sha256(image_bytes(3000 + i, i))
