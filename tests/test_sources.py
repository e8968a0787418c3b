"""One handler, every engine: events as AWS sends them (an SQS batch with message ids and
attributes, a Distributed Map batch) get the answer each engine needs, and a 20,000-item batch
gets a response that fits Lambda's limit."""
from __future__ import annotations

import json

import pytest
from conftest import keys_in, lambda_context, warm_s3_client

import handler

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:url2s3-queue"


def sqs_record(message_id: str, body: str, group: str | None = None) -> dict:
    """A record as the SQS event source mapping delivers it."""
    attributes = {"ApproximateReceiveCount": "1", "SentTimestamp": "1733241600000",
                  "SenderId": "AIDAEXAMPLESENDER", "ApproximateFirstReceiveTimestamp": "1733241600050"}
    if group:
        attributes.update(MessageGroupId=group, SequenceNumber="18890000000000000001",
                          MessageDeduplicationId=message_id)
    return {"messageId": message_id, "receiptHandle": f"AQEB{message_id}Rb3GKq==", "body": body,
            "attributes": attributes,
            "messageAttributes": {"batch": {"stringValue": "nightly", "stringListValues": [],
                                            "binaryListValues": [], "dataType": "String"}},
            "md5OfBody": "0bd4cd1ad8ad8f5d2a8bcd1a1b8a6e3c", "eventSource": "aws:sqs",
            "eventSourceARN": QUEUE_ARN + (".fifo" if group else ""), "awsRegion": "us-east-1"}


@pytest.fixture
def sqs_env(monkeypatch, bucket):
    monkeypatch.setenv("BUCKET", bucket)
    monkeypatch.setenv("PREFIX", "q/")
    monkeypatch.setenv("ORIGIN_ATTEMPTS", "1")
    warm_s3_client()


def test_sqs_lists_exactly_the_messages_to_redeliver(sqs_env, s3, bucket, shared_origin, monkeypatch):
    # GIVEN an SQS batch: one good URL, a 404 (permanent), a 503 (retryable), a body that is not a
    # URL, and an origin too slow for this invocation; reports on, in a bucket of their own
    s3.create_bucket(Bucket=f"{bucket}-reports")
    monkeypatch.setenv("REPORT_PREFIX", "reports/")
    monkeypatch.setenv("REPORT_BUCKET", f"{bucket}-reports")
    event = {"Records": [
        sqs_record("11111111-aaaa-4000-8000-000000000001", shared_origin.url("/ok?size=3000&seed=1")),
        sqs_record("11111111-aaaa-4000-8000-000000000002",
                   json.dumps({"url": shared_origin.url("/status?code=404")})),
        sqs_record("11111111-aaaa-4000-8000-000000000003",
                   json.dumps({"url": shared_origin.url("/status?code=503"), "key": "m3.jpg"})),
        sqs_record("11111111-aaaa-4000-8000-000000000004", "{this is not json"),
        sqs_record("11111111-aaaa-4000-8000-000000000005", shared_origin.url("/slow?delay=20")),
    ]}
    # WHEN
    response = handler.handler(event, lambda_context(4.0))
    # THEN exactly the retryable failure and the unfinished message are listed, in record order
    assert response == {"batchItemFailures": [{"itemIdentifier": "11111111-aaaa-4000-8000-000000000003"},
                                              {"itemIdentifier": "11111111-aaaa-4000-8000-000000000005"}]}
    [stored_key] = keys_in(s3, bucket)
    assert stored_key.startswith("q/127.0.0.1_")
    # AND the acknowledged permanent failures are in the report, with their message ids
    [report_key] = keys_in(s3, f"{bucket}-reports")
    report = json.loads(s3.get_object(Bucket=f"{bucket}-reports", Key=report_key)["Body"].read())
    assert report["source"] == "sqs" and report["totals"] == {
        "succeeded": 1, "failed": 3, "remaining": 1, "bytes": 3000}
    permanent = {f["message_id"]: f["error"] for f in report["failed"] if not f["retryable"]}
    assert set(permanent) == {"11111111-aaaa-4000-8000-000000000002", "11111111-aaaa-4000-8000-000000000004"}
    assert "HTTP 404" in permanent["11111111-aaaa-4000-8000-000000000002"]
    assert "not valid JSON" in permanent["11111111-aaaa-4000-8000-000000000004"]
    assert report["batchItemFailures"] == response["batchItemFailures"]


def test_sqs_fifo_keeps_a_group_in_order(sqs_env, shared_origin):
    # GIVEN a FIFO batch where the first message of group a fails in a retryable way
    event = {"Records": [
        sqs_record("a-1", shared_origin.url("/status?code=503"), group="a"),
        sqs_record("b-1", shared_origin.url("/ok?size=500&seed=1"), group="b"),
        sqs_record("a-2", shared_origin.url("/ok?size=500&seed=2"), group="a"),
    ]}
    # THEN the later message of group a is listed too, though it was stored; group b is not
    response = handler.handler(event, lambda_context(30))
    assert response == {"batchItemFailures": [{"itemIdentifier": "a-1"}, {"itemIdentifier": "a-2"}]}


def test_sqs_batch_wide_fault_lists_every_unfinished_message(sqs_env, monkeypatch, shared_origin):
    monkeypatch.setenv("BUCKET", "no-such-bucket-for-url2s3")
    event = {"Records": [sqs_record(f"m-{i}", shared_origin.url(f"/ok?size=500&seed={i}")) for i in range(4)]
             + [sqs_record("m-bad", "")]}
    response = handler.handler(event, lambda_context(30))
    assert response == {"batchItemFailures": [{"itemIdentifier": f"m-{i}"} for i in range(4)]}


@pytest.mark.parametrize("event, message", [
    ({"Records": [{"eventSource": "aws:s3", "s3": {}}]}, "Records[0] is not an SQS message"),
    ({"Records": [dict(sqs_record("x", "https://e.com/a.jpg"), messageId="")]}, "Records[0].messageId"),
])
def test_records_that_are_not_sqs_messages_are_refused(sqs_env, event, message):
    with pytest.raises(ValueError) as err:
        handler.handler(event, lambda_context(10))
    assert message in str(err.value)


def test_sqs_needs_the_bucket_from_the_environment(shared_origin):
    with pytest.raises(ValueError, match="BUCKET environment variable.*SQS message carries only"):
        handler.handler({"Records": [sqs_record("x", shared_origin.url("/ok"))]}, lambda_context(10))


def test_distributed_map_batch_gets_the_normal_response(s3, bucket, shared_origin):
    # GIVEN a batch as a Distributed Map ItemBatcher sends it, from a CSV with a url,key header
    # (a row with an empty key column), plus a row whose fields are wrong
    event = {"Items": [{"url": shared_origin.url("/ok?size=1000&seed=1"), "key": "a.jpg"},
                       {"url": shared_origin.url("/ok?size=1001&seed=2"), "key": ""},
                       shared_origin.url("/ok?size=1002&seed=3"),
                       {"link": shared_origin.url("/ok")}],
             "BatchInput": {"bucket": bucket, "prefix": "map/"}}
    # WHEN
    response = handler.handler(event, lambda_context(30))
    # THEN the wrong row fails alone, the others are stored, and nothing is left to loop on
    assert [r["key"] for r in response["succeeded"]][0] == "map/a.jpg" and len(response["succeeded"]) == 3
    [bad] = response["failed"]
    assert "Items[3] has unknown field(s) ['link']" in bad["error"] and bad["retryable"] is False
    assert response["remaining"] == [] and response["continuation"] is None and response["report"] is None
    assert response["totals"] == {"succeeded": 3, "failed": 1, "remaining": 0, "bytes": 3003}
    assert keys_in(s3, bucket) == {r["key"] for r in response["succeeded"]}


@pytest.mark.parametrize("event, message", [
    ({"Items": "x"}, "Items must be a list"),
    ({"Items": [], "BatchInput": {"bucket": "b", "prefx": "p"}}, "BatchInput has unknown field(s) ['prefx']"),
    ({"Items": []}, "BatchInput.bucket is required"),
    ({"urls": [], "bucket": "b", "hop": -1}, "hop must be a whole number"),
    ({"urls": [], "bucket": "b", "hop": True}, "hop must be a whole number"),
    ({"url": "https://e.com/a.jpg"}, "event shape not recognised"),
])
def test_wrong_shapes_name_what_was_expected(event, message):
    with pytest.raises(ValueError) as err:
        handler.handler(event, lambda_context(10))
    assert message in str(err.value)
    if "not recognised" in message:
        for shape in ("urls is required", "'manifest'", "'Items'", "'Records'"):
            assert shape in str(err.value)


def test_direct_event_accepts_a_hop_counter(invoke, bucket):
    assert invoke({"urls": [], "bucket": bucket, "hop": 3})["continuation"] is None


def test_a_20000_item_batch_gets_a_response_under_6_mb(monkeypatch, s3, bucket):
    # GIVEN 20,000 long URLs (3.6 MB of event) and an invocation too short to start any of them,
    # so every item is remaining and the continuation alone is as large as the event
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("REPORT_PREFIX", "_url2s3/reports/")
    urls = [f"https://cdn.example.com/{'deep/' * 20}{i:06d}/image-with-a-rather-long-name.jpg"
            for i in range(20_000)]
    event = {"urls": urls, "bucket": bucket}
    # WHEN
    response = handler.handler(event, lambda_context(2.0))
    # THEN the response fits, the continuation is whole, and the cut is said in `omitted`
    size = len(json.dumps(response).encode())
    assert len(json.dumps(event)) > 3_000_000 and size < 6_000_000
    assert response["continuation"] == event
    assert response["omitted"]["remaining"] + len(response["remaining"]) == 20_000
    assert response["remaining"] == urls[:len(response["remaining"])]
    # AND the report in S3 has every item and the same totals
    report = json.loads(s3.get_object(Bucket=bucket, Key=response["report"])["Body"].read())
    assert report["totals"] == response["totals"] == {"succeeded": 0, "failed": 0, "remaining": 20_000, "bytes": 0}
    assert [r["item"] for r in report["remaining"]] == urls
