"""Engine internals that users pay for: connection reuse, TLS resumption, the memory budget, and
part sizes that keep any declared size within S3's 10,000 parts."""
from __future__ import annotations

import threading
import time

import pytest
from conftest import sha256, stored
from origins import image_bytes

from connections import CancelScope, ConnectionPool
from deadline import Deadline
from errors import DeadlineExceeded
from origin import Origin, OriginOptions
from uploader import Budget, MemoryPlan

MiB = 1024 * 1024


def test_one_host_batch_reuses_connections(invoke, monkeypatch, bucket, raw_origin):
    # GIVEN 40 images from one host and 4 workers
    monkeypatch.setenv("WORKERS", "4")
    urls = [raw_origin.url(f"/ok?size={2000 + i}&seed={i}") for i in range(40)]
    # WHEN
    response = invoke({"urls": urls, "bucket": bucket})
    # THEN every image went over at most 4 connections (one per worker), not 40
    assert len(response["succeeded"]) == 40
    assert len(raw_origin.requests) == 40 and raw_origin.connections <= 4


def test_error_and_redirect_bodies_do_not_cost_a_connection(invoke, monkeypatch, bucket, raw_origin):
    monkeypatch.setenv("WORKERS", "1")
    monkeypatch.setenv("ORIGIN_ATTEMPTS", "1")
    urls = [raw_origin.url("/status?code=404"),
            raw_origin.url("/redirect?to=/ok%3Fsize%3D3000"), raw_origin.url("/ok?size=100")]
    response = invoke({"urls": urls, "bucket": bucket})
    assert len(response["succeeded"]) == 2 and raw_origin.connections == 1


def test_connection_closed_by_origin_while_idle_is_replaced(invoke, monkeypatch, bucket, raw_origin):
    # GIVEN an origin that hangs up idle connections without saying so
    monkeypatch.setenv("WORKERS", "1")
    monkeypatch.setenv("ORIGIN_ATTEMPTS", "1")  # the reconnect must not spend a retry
    urls = [raw_origin.url(f"/ok_then_hang_up?size={1000 + i}&seed={i}") for i in range(5)]
    response = invoke({"urls": urls, "bucket": bucket})
    assert len(response["succeeded"]) == 5 and raw_origin.connections == 5


def test_tls_sessions_are_resumed_on_new_connections(tls_origin):
    server, ca_pem = tls_origin
    server.expect_request("/a.jpg").respond_with_data(image_bytes(5000), content_type="image/jpeg",
                                                      headers={"Connection": "close"})
    origin = Origin(OriginOptions(allow_private=True, ca_bundle=ca_pem), CancelScope(),
                    ConnectionPool(per_host=2))
    resumed = []
    for _ in range(3):
        body = origin.open(server.url_for("/a.jpg"), Deadline.after(10))
        resumed.append(body._sock.session_reused)
        assert body.read() == image_bytes(5000)
        body.close()
    assert resumed == [False, True, True]


@pytest.mark.parametrize("function_mb, workers, large_slots", [
    (128, 64, 2), (512, 16, 16), (1769, 16, 16), (10240, 256, 256),
])
def test_memory_plan_fits_the_function(monkeypatch, function_mb, workers, large_slots):
    from config import load_settings
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(function_mb))
    monkeypatch.setenv("WORKERS", str(workers))
    options = load_settings().transfer
    plan = MemoryPlan.for_budget(options.memory_budget, options.part_size, options.workers,
                                 options.part_concurrency)
    assert plan.large_slots == large_slots
    assert plan.held_at_most() <= options.memory_budget
    assert 70 * MiB + plan.held_at_most() <= function_mb * MiB


def test_budget_never_exceeds_its_total_and_respects_the_deadline():
    budget, peak, used, lock = Budget(100), [0], [0], threading.Lock()

    def take(amount: int) -> None:
        with budget.hold(amount, Deadline.after(5), threading.Event()):
            with lock:
                used[0] += amount
                peak[0] = max(peak[0], used[0])
            time.sleep(0.01)
            with lock:
                used[0] -= amount

    threads = [threading.Thread(target=take, args=(a,)) for a in [30, 50, 70, 20, 100, 10] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0 < peak[0] <= 100
    with budget.hold(100, Deadline.after(1), threading.Event()):
        with pytest.raises(DeadlineExceeded):
            with budget.hold(1, Deadline.after(0.2), threading.Event()):
                pass


def test_part_size_grows_to_fit_the_part_limit(invoke, monkeypatch, s3, bucket, raw_origin):
    # GIVEN a part limit of 2 (S3's is 10,000) and a 20 MiB body with Content-Length
    import uploader
    monkeypatch.setattr(uploader, "MAX_PARTS", 2)
    size = 20 * MiB
    [ok] = invoke({"urls": [raw_origin.url(f"/ok?size={size}&seed=5")], "bucket": bucket})["succeeded"]
    # THEN the object is intact and was sent in 2 parts of 10 MiB instead of 3 of 8 MiB
    assert sha256(stored(s3, bucket, ok["key"])[0]) == sha256(image_bytes(size, 5))
    head = s3.head_object(Bucket=bucket, Key=ok["key"], PartNumber=1)
    assert head["PartsCount"] == 2 and head["ContentLength"] == 10 * MiB
