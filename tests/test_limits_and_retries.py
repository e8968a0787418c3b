"""Size limits, origin retries with backoff and Retry-After, checksums, and what a failure leaves."""
from __future__ import annotations

import logging
import time

import pytest
from conftest import SAMPLES, keys_in, sha256, stored
from origins import image_bytes

PNG = (SAMPLES / "diagram.png").read_bytes()
BIG = 9 * 1024 * 1024


@pytest.mark.parametrize("path, limit, read_before_refusal", [
    ("/ok?size=200000", 100_000, False),                          # declared too big: refused unread
    (f"/ok?size={BIG}", 8 * 1024 * 1024, False),
    ("/chunked?size=300000&chunk=7000", 100_000, True),           # no length: cut off while reading
    ("/close-delimited?size=300000", 100_000, True),
    ("/endless", 2 * 1024 * 1024, True),
    (f"/chunked?size={BIG + 5_000_000}&chunk=65536", BIG, True),  # cut off after a part was uploaded
])
def test_max_bytes(invoke, monkeypatch, s3, bucket, raw_origin, path, limit, read_before_refusal):
    monkeypatch.setenv("MAX_BYTES", str(limit))
    response = invoke({"urls": [raw_origin.url(path)], "bucket": bucket})
    [failed] = response["failed"]
    assert "MAX_BYTES" in failed["error"] and failed["retryable"] is False
    assert ("Content-Length" in failed["error"]) is not read_before_refusal
    assert keys_in(s3, bucket) == set()


def test_transient_origin_error_is_retried(invoke, s3, bucket, httpserver):
    httpserver.expect_oneshot_request("/flaky.png").respond_with_data("busy", status=502)
    httpserver.expect_oneshot_request("/flaky.png").respond_with_data("busy", status=500)
    httpserver.expect_request("/flaky.png").respond_with_data(PNG, content_type="image/png")
    [ok] = invoke({"urls": [httpserver.url_for("/flaky.png")], "bucket": bucket})["succeeded"]
    assert sha256(stored(s3, bucket, ok["key"])[0]) == sha256(PNG)
    assert len(httpserver.log) == 3


def test_truncated_body_is_retried_then_reported(invoke, bucket, raw_origin):
    response = invoke({"urls": [raw_origin.url("/truncate?declared=5000&send=10")], "bucket": bucket})
    assert response["failed"][0]["retryable"] is True
    assert len(raw_origin.requests) == 3  # ORIGIN_ATTEMPTS default


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured(invoke, bucket, raw_origin, code):
    url = raw_origin.url(f"/status?code={code}&retry_after=1")
    started = time.monotonic()
    response = invoke({"urls": [url], "bucket": bucket}, seconds=30)
    assert response["failed"][0]["retryable"] is True
    assert len(raw_origin.requests) == 3
    assert time.monotonic() - started >= 2.0  # two waits of Retry-After: 1


def test_retry_after_beyond_the_cap_is_not_waited_for(invoke, monkeypatch, bucket, raw_origin):
    monkeypatch.setenv("RETRY_AFTER_MAX", "5")
    response = invoke({"urls": [raw_origin.url("/status?code=503&retry_after=3600")], "bucket": bucket})
    assert response["failed"][0]["error"].startswith("HTTP 503")
    assert len(raw_origin.requests) == 1


def test_retries_stop_at_the_deadline(invoke, bucket, raw_origin):
    # Retry-After: 8 fits the cap but not the 4 s invocation: no retry, reported at once.
    response = invoke({"urls": [raw_origin.url("/status?code=503&retry_after=8")], "bucket": bucket},
                      seconds=4)
    assert response["failed"][0]["retryable"] is True and len(raw_origin.requests) == 1


def test_failure_leaves_an_existing_object_untouched(invoke, s3, bucket, raw_origin):
    # GIVEN an object already stored under the key
    s3.put_object(Bucket=bucket, Key="keep/me.jpg", Body=b"old bytes", ContentType="image/jpeg")
    # WHEN a new fetch for that key is cut short, in the single-PUT and in the multipart path
    for path in ("/truncate?declared=5000&send=3000", f"/truncate?declared={BIG}&send={BIG - 10}"):
        response = invoke({"urls": [{"url": raw_origin.url(path), "key": "keep/me.jpg"}], "bucket": bucket})
        assert response["failed"]
    # THEN the old object is exactly as it was
    assert stored(s3, bucket, "keep/me.jpg")[0] == b"old bytes"


@pytest.mark.parametrize("size", [50_000, BIG])
def test_uploads_carry_a_checksum_s3_verifies(invoke, s3, bucket, raw_origin, size):
    [ok] = invoke({"urls": [raw_origin.url(f"/ok?size={size}")], "bucket": bucket})["succeeded"]
    head = s3.head_object(Bucket=bucket, Key=ok["key"], ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32")


def test_many_workers_never_exhaust_the_connection_pool(invoke, monkeypatch, caplog, bucket, raw_origin):
    monkeypatch.setenv("WORKERS", "32")
    urls = [raw_origin.url(f"/ok?size={20_000 + i}&seed={i}") for i in range(40)]
    urls += [raw_origin.url(f"/ok?size={BIG}&seed={i}") for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        response = invoke({"urls": urls, "bucket": bucket}, seconds=120)
    assert len(response["succeeded"]) == 50
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
