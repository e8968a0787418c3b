"""S3 manifests: the reader streams lines with ranged GETs (lines cut by chunk boundaries, CRLF,
a byte-order mark, JSON lines, bad lines that fail alone, a manifest replaced mid-job), its memory
does not grow with the file, and a 100,000-line manifest is worked through by a chain of
invocations with short deadlines, each URL stored or failed exactly once."""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import tracemalloc
from collections import Counter

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from conftest import keys_in, lambda_context, warm_s3_client

import handler
from manifest import MAX_LINE_BYTES, ManifestReader


def put(s3, bucket: str, key: str, data: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def read_all(reader: ManifestReader) -> list:
    return [(item.index, item.given) for item in reader]


TRICKY = ("\ufeffhttps://e.com/first.jpg\r\n"
          "# a comment\n"
          "\n"
          '{"url": "https://e.com/b.png", "key": "k/b.png"}\n'
          '"https://e.com/c.gif"\n'
          "https://e.com/caf\u00e9/\u00e9t\u00e9.jpg\n"   # multi-byte UTF-8, may straddle a boundary
          '{"url": "https://e.com/bad.png", "colour": "red"}\n'
          "{not json\n"
          "   https://e.com/spaced.jpg   \n").encode("utf-8") + (
          b"https://e.com/latin-1-\xe9t\xe9.jpg\n"
          b"https://e.com/last-without-newline.jpg")


@pytest.mark.parametrize("chunk", [3, 7, 64, 1024 * 1024])
def test_reader_gives_every_line_once_whatever_the_chunk_size(s3, bucket, chunk):
    put(s3, bucket, "m.txt", TRICKY)
    reader = ManifestReader(s3, bucket, "m.txt", chunk=chunk)
    items = read_all(reader)
    assert [given for _, given in items] == [
        "https://e.com/first.jpg", {"url": "https://e.com/b.png", "key": "k/b.png"}, "https://e.com/c.gif",
        "https://e.com/caf\u00e9/\u00e9t\u00e9.jpg", "https://e.com/spaced.jpg",
        "https://e.com/last-without-newline.jpg"]
    # an item's index is the byte offset where its line starts
    assert [index for index, _ in items][1:3] == [TRICKY.index(b'{"url": "https://e.com/b.png"'),
                                                   TRICKY.index(b'"https://e.com/c.gif"')]
    bad_json, bad_field = TRICKY.index(b"{not json"), TRICKY.index(b'{"url": "https://e.com/bad.png"')
    assert [r.error for r in reader.rejected] == [
        f"manifest line at byte {bad_field} has unknown field(s) ['colour']; an item takes 'url' and optional 'key'",
        f"manifest line at byte {bad_json} is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)",
        f"manifest line at byte {TRICKY.index(b'https://e.com/latin-1')} is not UTF-8 text"]
    assert all(r.status == "failed" and r.retryable is False for r in reader.rejected)
    assert reader.eof and reader.offset == len(TRICKY) and reader.error is None


def test_reading_resumes_at_the_offset_left_by_a_partial_read(s3, bucket):
    lines = [f"https://e.com/{i}.jpg" for i in range(500)]
    put(s3, bucket, "m.txt", "\n".join(lines).encode() + b"\n")
    first = ManifestReader(s3, bucket, "m.txt", chunk=100)
    taken = [item.given for _, item in zip(range(123), first)]  # the engine stops pulling after 123
    assert not first.eof and first.offset == sum(len(line) + 1 for line in lines[:123])
    second = ManifestReader(s3, bucket, "m.txt", offset=first.offset, etag=first.etag, chunk=100)
    assert taken + [item.given for item in second] == lines and second.eof


def test_an_overlong_line_fails_alone(s3, bucket):
    data = b"https://e.com/a.jpg\nhttps://e.com/" + b"x" * (MAX_LINE_BYTES + 10) + b"\nhttps://e.com/b.jpg\n"
    put(s3, bucket, "m.txt", data)
    reader = ManifestReader(s3, bucket, "m.txt", chunk=4096)
    assert [item.given for item in reader] == ["https://e.com/a.jpg", "https://e.com/b.jpg"]
    [bad] = reader.rejected
    assert "longer than" in bad.error and bad.item.index == 20


def test_a_manifest_replaced_mid_job_stops_with_an_error(s3, bucket):
    put(s3, bucket, "m.txt", b"https://e.com/a.jpg\nhttps://e.com/b.jpg\n")
    first = ManifestReader(s3, bucket, "m.txt")
    next(iter(first))
    put(s3, bucket, "m.txt", b"https://other.org/z.jpg\n")
    later = ManifestReader(s3, bucket, "m.txt", offset=first.offset, etag=first.etag)
    assert list(later) == [] and "changed since the job started" in later.error and not later.eof


def test_a_missing_manifest_is_a_batch_error_not_an_exception(s3, bucket):
    response = handler.handler({"manifest": {"bucket": bucket, "key": "nope.txt"}, "bucket": bucket},
                               lambda_context(10))
    assert "NoSuchKey" in response["error"] and response["continuation"]["manifest"]["offset"] == 0


@pytest.mark.parametrize("event, field", [
    ({"manifest": "s3://b/k"}, "manifest must be an object"),
    ({"manifest": {"bucket": "b"}}, "manifest.key is required"),
    ({"manifest": {"bucket": "b", "key": "k", "offset": -1}}, "manifest.offset must be"),
    ({"manifest": {"bucket": "b", "key": "k", "ofset": 3}}, "manifest has unknown field(s) ['ofset']"),
    ({"manifest": {"bucket": "b", "key": "k"}, "urls": "x", "bucket": "b"}, "urls must be a list"),
])
def test_invalid_manifest_event_names_the_field(event, field):
    with pytest.raises(ValueError, match=None) as err:
        handler.handler(event, lambda_context(10))
    assert field in str(err.value)


# memory ---------------------------------------------------------------------------------------

def manifest_lines(count: int) -> bytes:
    return b"".join(b"https://cdn.example.com/images/%08d.jpg\n" % i for i in range(count))


def peak_while_reading(s3, bucket: str, key: str, count: int) -> int:
    """Peak traced memory while every item is pulled and dropped, as the engine does; also checks
    every line came out once, in order (a running digest keeps the check itself flat)."""
    expected = hashlib.sha256(b"".join(b"https://cdn.example.com/images/%08d.jpg" % i for i in range(count)))
    got, seen = hashlib.sha256(), 0
    reader = ManifestReader(s3, bucket, key, chunk=64 * 1024)
    tracemalloc.start()
    try:
        for item in reader:
            got.update(item.url.encode())
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count and got.digest() == expected.digest() and reader.eof
    return peak


@pytest.fixture(scope="module")
def s3_elsewhere():
    """S3 (moto) in a process of its own: tracemalloc sees every thread of this process, and the
    in-process moto server holds whole objects in memory while it serves ranges of them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        for _ in range(100):
            try:
                client.create_bucket(Bucket="memory")
                break
            except EndpointConnectionError:
                time.sleep(0.1)
        yield client
    finally:
        server.terminate()
        server.wait(10)


def test_memory_stays_flat_while_reading_a_100000_line_manifest(s3_elsewhere):
    put(s3_elsewhere, "memory", "small.txt", manifest_lines(10_000))
    put(s3_elsewhere, "memory", "big.txt", manifest_lines(100_000))  # 4.1 MB: 64 GETs of 64 KiB
    small = peak_while_reading(s3_elsewhere, "memory", "small.txt", 10_000)
    big = peak_while_reading(s3_elsewhere, "memory", "big.txt", 100_000)
    assert big < 1024 * 1024
    assert big < small * 1.5 + 64 * 1024, (small, big)


# a chain of invocations -------------------------------------------------------------------------

LINES = 100_000


def line_for(i: int, origin) -> str:
    """Mostly URLs that fail at once (a host outside ALLOWED_HOSTS), so the chain is quick; every
    100th is a real image, every 250th a 404, every 400th slow enough to be cut by a deadline and
    carried to the next call; some JSON lines with keys, comments and blank lines."""
    if i % 400 == 7:
        return origin.url(f"/slow?delay=1.2&size=80&seed={i}")
    if i % 100 == 3:
        return json.dumps({"url": origin.url(f"/ok?size=64&seed={i}"), "key": f"m/{i}.jpg"})
    if i % 100 == 5:
        return origin.url(f"/ok?size=64&seed={i}")
    if i % 250 == 11:
        return origin.url(f"/status?code=404&n={i}")
    if i % 1000 == 13:
        return "# a comment"
    if i % 1000 == 17:
        return ""
    return f"https://elsewhere.example/{i}.jpg"


def url_of(line: str) -> str | None:
    if not line or line.startswith("#"):
        return None
    return json.loads(line)["url"] if line.startswith("{") else line


def run_chain(event: dict, seconds: float, max_calls: int) -> tuple[list, dict | None]:
    responses = []
    while event is not None and len(responses) < max_calls:
        response = handler.handler(event, lambda_context(seconds))
        assert "error" not in response
        responses.append(response)
        event = response["continuation"]
    return responses, event


@pytest.fixture
def big_manifest(s3, bucket, shared_origin, monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("ORIGIN_ATTEMPTS", "1")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    warm_s3_client()
    lines = [line_for(i, shared_origin) for i in range(LINES)]
    data = "\n".join(lines).encode() + b"\n"
    put(s3, bucket, "urls.txt", data)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line.encode()) + 1)
    return lines, starts


def check_exactly_once(responses: list, lines: list, first: int, last: int, leftovers: list) -> None:
    """Each URL of lines[first:last] is in exactly one succeeded / failed entry, or still left over."""
    seen = Counter(r["url"] for resp in responses for r in resp["succeeded"] + resp["failed"])
    seen.update(item if isinstance(item, str) else item["url"] for item in leftovers)
    expected = Counter(u for u in map(url_of, lines[first:last]) if u is not None)
    assert seen == expected


def test_a_100000_line_manifest_from_the_start_exactly_once(s3, bucket, big_manifest):
    # GIVEN a 100,000-line manifest and 3 s invocations (0.5 s of it to start items)
    lines, starts = big_manifest
    event = {"manifest": {"bucket": bucket, "key": "urls.txt", "offset": 0}, "bucket": bucket}
    # WHEN three invocations run, each with the previous one's continuation
    responses, event = run_chain(event, seconds=3.0, max_calls=3)
    # THEN every line before the final offset was stored or failed exactly once, or is carried in
    # `urls`; some invocation carried leftovers to the next one; the offsets land on line starts
    offset = event["manifest"]["offset"]
    assert offset in starts and 0 < offset < starts[-1]
    check_exactly_once(responses, lines, 0, starts.index(offset), event.get("urls", []))
    assert any(r["continuation"].get("urls") for r in responses)
    stored_keys = {r["key"] for resp in responses for r in resp["succeeded"]}
    assert stored_keys and keys_in(s3, bucket) == stored_keys | {"urls.txt"}


def test_the_end_of_a_100000_line_manifest_until_continuation_is_null(s3, bucket, big_manifest):
    # GIVEN the same manifest, picked up at line 97,000 (a continuation a chain would hold)
    lines, starts = big_manifest
    event = {"manifest": {"bucket": bucket, "key": "urls.txt", "offset": starts[97_000]}, "bucket": bucket}
    # WHEN invoked with each continuation until it is null
    responses, event = run_chain(event, seconds=3.0, max_calls=20)
    # THEN it ended by itself after several invocations, each line exactly once
    assert event is None and len(responses) >= 2
    assert responses[-1]["manifest"] == {"offset": starts[-1], "size": starts[-1], "done": True}
    check_exactly_once(responses, lines, 97_000, LINES, [])
