"""GIVEN origins that are slow, stall or trickle and a short Lambda deadline, WHEN the handler runs,
THEN it returns with time to spare, unfinished items come back as remaining with a continuation,
no partial object or open multipart upload is left, and re-invoking finishes the job."""
from __future__ import annotations

import time

import pytest
from conftest import keys_in, sha256, stored
from origins import image_bytes

BIG = 9 * 1024 * 1024


def test_five_urls_one_failing_one_slow_all_settle(invoke, s3, bucket, raw_origin):
    urls = [raw_origin.url(f"/ok?size={1000 + i}&seed={i}") for i in range(3)]
    urls += [raw_origin.url("/status?code=404"), raw_origin.url("/slow?delay=1.5&size=5000")]
    response = invoke({"urls": urls, "bucket": bucket}, seconds=20)
    assert sorted(r["url"] for r in response["succeeded"]) == sorted(urls[:3] + urls[4:])
    assert [r["url"] for r in response["failed"]] == [urls[3]]
    assert response["remaining"] == [] and len(keys_in(s3, bucket)) == 4


@pytest.mark.parametrize("path", [
    "/stall?seconds=30",                                  # never sends headers
    "/trickle?size=100000&interval=0.5",                  # a byte every half second
    "/endless",                                           # a body that never ends
    f"/stall_after?size={BIG * 2}&after={BIG + 5000}",    # goes silent mid multipart upload
    "/slow?delay=10",
])
def test_unfinishable_item_comes_back_as_remaining_in_time(invoke, s3, bucket, raw_origin, path):
    # GIVEN one hostile URL among good ones, and 4 s left in the invocation
    good = [raw_origin.url(f"/ok?size=2000&seed={i}") for i in range(4)]
    bad = raw_origin.url(path)
    # WHEN (invoke asserts the return came with >= 0.5 s to spare and no multipart upload is open)
    response = invoke({"urls": [*good, bad], "bucket": bucket}, seconds=4.0)
    # THEN the good ones are stored, the hostile one is remaining, and nothing else is in S3
    assert sorted(r["url"] for r in response["succeeded"]) == sorted(good)
    assert response["remaining"] == [bad]
    assert response["continuation"]["urls"] == [bad]
    assert keys_in(s3, bucket) == {r["key"] for r in response["succeeded"]}


def test_continuation_finishes_the_job(invoke, s3, bucket, raw_origin):
    # GIVEN 12 items that each take 0.6 s, 2 workers, and 4 s per invocation (2.5 s of work)
    urls = [raw_origin.url(f"/slow?delay=0.6&size={3000 + i}&seed={i}") for i in range(12)]
    event = {"urls": urls, "bucket": bucket, "prefix": "p/"}
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKERS", "2")
        while event is not None:
            response = invoke(event, seconds=4.0)
            calls.append(response)
            event = response["continuation"]
    # THEN it took several invocations, each URL was stored exactly once overall, bytes intact
    assert len(calls) >= 2
    done = [r for call in calls for r in call["succeeded"]]
    assert sorted(r["url"] for r in done) == sorted(urls)
    for r in done:
        size = int(r["url"].split("size=")[1].split("&")[0])
        seed = int(r["url"].split("seed=")[1])
        assert sha256(stored(s3, bucket, r["key"])[0]) == sha256(image_bytes(size, seed))


def test_no_item_starts_when_time_is_already_short(invoke, bucket, raw_origin):
    # GIVEN less time than the safety margin plus the minimum start time
    urls = [raw_origin.url(f"/ok?seed={i}") for i in range(3)]
    started = time.monotonic()
    response = invoke({"urls": urls, "bucket": bucket}, seconds=2.0)
    # THEN nothing was even requested and everything is handed back at once
    assert response["remaining"] == urls and raw_origin.requests == []
    assert time.monotonic() - started < 1.0
