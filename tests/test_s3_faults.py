"""GIVEN S3 faults injected on the wire (503 SlowDown, 500, TCP resets) on each upload operation,
THEN transient faults are absorbed by botocore's retries with the bytes intact, persistent faults
fail that URL alone as retryable with nothing left behind, and a fault that would fail every item
(no such bucket) stops the batch early with one error and everything in `remaining`."""
from __future__ import annotations

import pytest
from conftest import check_accounting, keys_in, lambda_context, open_uploads, sha256, stored
from origins import image_bytes
from s3faults import FaultProxy

BIG = 9 * 1024 * 1024  # multipart: CreateMultipartUpload, 2 x UploadPart, CompleteMultipartUpload


@pytest.fixture
def proxy(moto_endpoint, monkeypatch):
    p = FaultProxy(moto_endpoint).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
    yield p
    p.stop()


def run(event: dict, seconds: float = 60) -> dict:
    import handler
    response = handler.handler(event, lambda_context(seconds))
    check_accounting(event, response)
    return response


@pytest.mark.parametrize("op, fault, size", [
    ("PutObject", 503, 50_000), ("PutObject", 500, 50_000), ("PutObject", "reset", 50_000),
    ("CreateMultipartUpload", 503, BIG), ("UploadPart", 503, BIG), ("UploadPart", 500, BIG),
    ("UploadPart", "reset", BIG), ("CompleteMultipartUpload", 503, BIG),
    ("CompleteMultipartUpload", "reset", BIG),
])
def test_transient_s3_faults_are_retried(proxy, s3, bucket, raw_origin, op, fault, size):
    proxy.inject(op, fault, times=2)
    url = raw_origin.url(f"/ok?size={size}&seed=3")
    response = run({"urls": [url], "bucket": bucket})
    [ok] = response["succeeded"]
    assert len(proxy.injected) == 2
    assert sha256(stored(s3, bucket, ok["key"])[0]) == sha256(image_bytes(size, 3))
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("op, fault, size", [
    ("PutObject", 503, 50_000), ("PutObject", "reset", 50_000),
    ("UploadPart", 500, BIG), ("CompleteMultipartUpload", 503, BIG),
])
def test_persistent_s3_fault_fails_that_url_alone(proxy, s3, bucket, raw_origin, op, fault, size):
    # GIVEN one URL whose key always fails on `op`, and two good URLs
    bad = raw_origin.url(f"/ok?size={size}&seed=9")
    good = [raw_origin.url(f"/ok?size={size}&seed={i}") for i in (1, 2)]
    proxy.inject(op, fault, times=100, key_part="/doomed.jpg")
    # WHEN
    response = run({"urls": [{"url": bad, "key": "doomed.jpg"}, *good], "bucket": bucket})
    # THEN the bad one failed as retryable, the good ones are stored, nothing is half-done
    [failed] = response["failed"]
    assert failed["url"] == bad and failed["retryable"] is True and "S3 upload failed" in failed["error"]
    assert sorted(r["url"] for r in response["succeeded"]) == sorted(good)
    assert keys_in(s3, bucket) == {r["key"] for r in response["succeeded"]}
    assert open_uploads(s3, bucket) == []


def test_missing_bucket_stops_the_batch_with_one_error(proxy, raw_origin, monkeypatch):
    monkeypatch.setenv("WORKERS", "2")
    urls = [raw_origin.url(f"/ok?size=2000&seed={i}") for i in range(30)]
    response = run({"urls": urls, "bucket": "no-such-bucket-here"})
    assert "NoSuchBucket" in response["error"]
    assert response["succeeded"] == [] and response["failed"] == []
    assert response["remaining"] == urls and response["continuation"]["urls"] == urls
    puts = [op for op, _ in proxy.seen if op == "PutObject"]
    assert len(puts) <= 2 * 5  # at most the in-flight items (x botocore attempts), not all 30
