"""Invalid events raise ValueError naming the field; bad URLs fail alone; private origins and
non-http schemes are refused without any I/O."""
from __future__ import annotations

import pytest
import handler
from conftest import SAMPLES, keys_in, lambda_context, sha256, stored


@pytest.mark.parametrize("event, field", [
    ([], "event must be a JSON object"),
    ({}, "urls is required"),
    ({"urls": "https://x.org/a.jpg", "bucket": "b"}, "urls is required and must be a list"),
    ({"urls": ["https://x.org/a.jpg"]}, "bucket is required"),
    ({"urls": [], "bucket": ""}, "bucket is required"),
    ({"urls": [], "bucket": "b", "prefix": 3}, "prefix must be a string"),
    ({"urls": [], "bucket": "a/b"}, "bucket 'a/b' is not a bucket name"),
    ({"urls": [], "bucket": "my-bucket", "prefix": "x\udc80/"}, "prefix is not valid text"),
    ({"urls": [], "bucket": "b", "prefx": "p/"}, "unknown field(s) ['prefx']"),
    ({"urls": ["https://x.org/a.jpg", 42], "bucket": "b"}, "urls[1] must be a URL string or an object"),
    ({"urls": [{"key": "a.jpg"}], "bucket": "b"}, "urls[0].url is required"),
    ({"urls": [{"url": None}], "bucket": "b"}, "urls[0].url is required"),
    ({"urls": [{"url": "https://x.org/a.jpg", "key": 5}], "bucket": "b"}, "urls[0].key must be a string"),
    ({"urls": [{"url": "https://x.org/a.jpg", "kye": "a"}], "bucket": "b"}, "urls[0] has unknown field(s) ['kye']"),
])
def test_invalid_event_names_the_field(event, field):
    with pytest.raises(ValueError) as err:
        handler.handler(event, lambda_context(10))
    assert field in str(err.value)


def test_bucket_and_prefix_fall_back_to_environment(invoke, monkeypatch, s3, bucket, httpserver):
    monkeypatch.setenv("BUCKET", bucket)
    monkeypatch.setenv("PREFIX", "env-prefix/")
    httpserver.expect_request("/a.gif").respond_with_data((SAMPLES / "icon.gif").read_bytes(),
                                                          content_type="image/gif")
    event = {"urls": [httpserver.url_for("/a.gif")]}
    response = invoke(event)
    [ok] = response["succeeded"]
    assert ok["key"].startswith("env-prefix/") and keys_in(s3, bucket) == {ok["key"]}


def test_empty_list_is_a_valid_event(invoke, bucket):
    assert invoke({"urls": [], "bucket": bucket}) == {
        "succeeded": [], "failed": [], "remaining": [], "continuation": None, "report": None,
        "totals": {"succeeded": 0, "failed": 0, "remaining": 0, "bytes": 0}}


@pytest.mark.parametrize("url, error", [
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("FILE:///etc/passwd", "scheme 'file' is not allowed"),
    ("ftp://x.org/a.jpg", "scheme 'ftp' is not allowed"),
    ("gopher://x.org/a.jpg", "scheme 'gopher' is not allowed"),
    ("data:image/png;base64,iVBORw0KGgo=", "scheme 'data' is not allowed"),
    ("//x.org/a.jpg", "scheme '(none)' is not allowed"),
    ("not a url", "scheme '(none)' is not allowed"),
    ("http://", "URL has no host"),
    ("http://[::1/a.jpg", "invalid URL"),
    ("https://user:pw@x.org/a.jpg", "credentials"),
    ("http://evil@127.0.0.1/a.jpg", "credentials"),
    ("http://a..b/x.jpg", "empty label"),
    ("http://../x.jpg", "empty label"),
    ("http://x.org\\@127.0.0.1/a.jpg", "not valid"),
    ("https://x.org/\udc80.jpg", "unpaired surrogates"),
])
def test_bad_url_fails_alone(invoke, s3, bucket, httpserver, url, error):
    httpserver.expect_request("/ok.png").respond_with_data((SAMPLES / "diagram.png").read_bytes(),
                                                           content_type="image/png")
    good = httpserver.url_for("/ok.png")
    response = invoke({"urls": [url, good], "bucket": bucket})
    assert [r["url"] for r in response["succeeded"]] == [good]
    [failed] = response["failed"]
    assert error in failed["error"] and failed["retryable"] is False
    assert len(keys_in(s3, bucket)) == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f.1", "[::1]"])
def test_private_origin_refused_without_switch(invoke, monkeypatch, bucket, raw_origin, host):
    # GIVEN a loopback origin and ALLOW_PRIVATE_NETWORKS unset
    monkeypatch.delenv("ALLOW_PRIVATE_NETWORKS")
    url = f"http://{host}:{raw_origin.port}/ok"
    # WHEN
    response = invoke({"urls": [url], "bucket": bucket})
    # THEN it failed as blocked and no connection reached the origin
    [failed] = response["failed"]
    assert "is not allowed" in failed["error"] and failed["retryable"] is False
    assert raw_origin.connections == 0


def test_tls_origin_with_private_ca(invoke, monkeypatch, s3, bucket, tls_origin):
    server, ca_pem = tls_origin
    body = (SAMPLES / "sunset.jpg").read_bytes()
    server.expect_request("/s.jpg").respond_with_data(body, content_type="image/jpeg")
    url = server.url_for("/s.jpg")
    assert url.startswith("https://")
    # untrusted: refused, not retryable
    untrusted = invoke({"urls": [url], "bucket": bucket})
    assert "certificate" in untrusted["failed"][0]["error"]
    assert untrusted["failed"][0]["retryable"] is False
    # trusted through CA_BUNDLE: stored intact
    monkeypatch.setenv("CA_BUNDLE", ca_pem)
    [ok] = invoke({"urls": [url], "bucket": bucket})["succeeded"]
    assert sha256(stored(s3, bucket, ok["key"])[0]) == sha256(body)


@pytest.mark.parametrize("name, value", [
    ("WORKERS", "many"), ("WORKERS", "0"), ("PART_SIZE_MB", "4"), ("SAFETY_MARGIN_MS", "-1"),
    ("ALLOW_PRIVATE_NETWORKS", "maybe"), ("S3_RETRY_MODE", "legacy"), ("MAX_BYTES", "1e99"),
])
def test_invalid_configuration_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as err:
        handler.handler({"urls": [], "bucket": "b"}, lambda_context(10))
    assert name in str(err.value)


@pytest.mark.parametrize("name, value", [
    ("CA_BUNDLE", "/nonexistent/ca.pem"), ("CA_BUNDLE", "/etc/hostname"), ("MAX_BYTES", "0.5"),
    ("WORKERS", "2.5"),
])
def test_configuration_is_checked_before_any_item(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as err:
        handler.handler({"urls": ["https://x.org/a.jpg"], "bucket": "b"}, lambda_context(10))
    assert name in str(err.value)


def test_log_level_is_checked_not_fatal_at_import(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with pytest.raises(ValueError) as err:
        handler.handler({"urls": [], "bucket": "b"}, lambda_context(10))
    assert "LOG_LEVEL" in str(err.value)
