"""Property: for any mix of origin behaviours and any deadline, every item ends in exactly one of
succeeded / failed / remaining, the handler returns in time, and the bucket holds exactly the
succeeded objects with the served bytes (and no open multipart upload)."""
from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings, strategies as st
from conftest import keys_in, sha256, stored
from origins import image_bytes

BEHAVIOURS = {
    "ok": lambda i: f"/ok?size={1000 + i * 997}&seed={i}",
    "big": lambda i: f"/ok?size={9 * 1024 * 1024 + i}&seed={i}",
    "chunked": lambda i: f"/chunked?size={50_000 + i}&chunk=4096&seed={i}",
    "missing": lambda i: f"/status?code=404&seed={i}",
    "broken": lambda i: f"/status?code=500&seed={i}",
    "truncated": lambda i: f"/truncate?declared=9000&send=4000&seed={i}",
    "slow": lambda i: f"/slow?delay=1.5&size=3000&seed={i}",
    "stall": lambda i: f"/stall?seconds=30&seed={i}",
    "trickle": lambda i: f"/trickle?size=2000&interval=0.3&seed={i}",
}


def expected_bytes(path: str) -> bytes:
    params = dict(p.split("=") for p in path.split("?")[1].split("&"))
    return image_bytes(int(params["size"]), int(params.get("seed", 0)))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(BEHAVIOURS)), min_size=1, max_size=12),
       seconds=st.floats(min_value=2.5, max_value=6.0), workers=st.integers(1, 8))
def test_every_item_settles_exactly_once(invoke, s3, raw_origin, monkeypatch, kinds, seconds, workers):
    monkeypatch.setenv("WORKERS", str(workers))
    bucket = f"prop-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    paths = [BEHAVIOURS[kind](i) for i, kind in enumerate(kinds)]
    # invoke() checks exactly-once accounting, time to spare, and no open multipart upload
    response = invoke({"urls": [raw_origin.url(p) for p in paths], "bucket": bucket}, seconds=seconds)
    assert keys_in(s3, bucket) == {r["key"] for r in response["succeeded"]}
    for r in response["succeeded"]:
        path = r["url"].split(str(raw_origin.port), 1)[1]
        assert sha256(stored(s3, bucket, r["key"])[0]) == sha256(expected_bytes(path))
    for r in response["failed"]:
        assert any(k in r["url"] for k in ("status", "truncate"))
