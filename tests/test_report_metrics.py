"""What an invocation leaves behind besides its response: the JSON report in S3 (same totals as
the response), one structured log line per item plus a summary (readable by Lambda's JSON log
format without double encoding), and EMF metric lines that follow the EMF structure."""
from __future__ import annotations

import json
import logging
import time

import pytest
from awslambdaric.lambda_runtime_log_utils import JsonFormatter
from conftest import keys_in, lambda_context, warm_s3_client

import response as shaping
from transfer import Item, Outcome

EMF_UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
             "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
             "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
             "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
             "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}


@pytest.fixture
def mixed(shared_origin, bucket, monkeypatch):
    """A direct event with one image, one 404 and one origin too slow for the invocation."""
    monkeypatch.setenv("ORIGIN_ATTEMPTS", "1")
    warm_s3_client()
    return {"urls": [shared_origin.url("/ok?size=2500&seed=1"), shared_origin.url("/status?code=404"),
                     shared_origin.url("/slow?delay=20")], "bucket": bucket, "prefix": "img/"}


@pytest.fixture
def quick(mixed):
    """The same without the slow origin: nothing waits for the deadline."""
    return {**mixed, "urls": mixed["urls"][:2]}


def run(event: dict, seconds: float = 3.2) -> dict:
    import handler
    return handler.handler(event, lambda_context(seconds))


def test_report_in_s3_matches_the_response(mixed, monkeypatch, s3, bucket):
    # GIVEN reports under a prefix of the target bucket
    monkeypatch.setenv("REPORT_PREFIX", "_url2s3/reports/")
    # WHEN
    response = run(mixed)
    # THEN the report is where the response says, with the same totals and every item
    assert response["report"].startswith("_url2s3/reports/" + time.strftime("%Y/%m/%d/", time.gmtime()))
    assert keys_in(s3, bucket) == {response["report"], response["succeeded"][0]["key"]}
    report = json.loads(s3.get_object(Bucket=bucket, Key=response["report"])["Body"].read())
    assert report["totals"] == response["totals"] == {"succeeded": 1, "failed": 1, "remaining": 1, "bytes": 2500}
    assert [r["key"] for r in report["succeeded"]] == [r["key"] for r in response["succeeded"]]
    assert [r["error"] for r in report["failed"]] == [r["error"] for r in response["failed"]]
    assert [r["item"] for r in report["remaining"]] == response["remaining"]
    assert report["continuation"] == response["continuation"]
    assert report["source"] == "direct" and report["bucket"] == bucket and report["prefix"] == "img/"
    assert all(r["attempts"] == 1 and r["ms"] >= 0 for r in report["succeeded"] + report["failed"])


def test_reports_are_off_unless_a_prefix_is_set(quick, s3, bucket):
    response = run(quick)
    assert response["report"] is None and keys_in(s3, bucket) == {response["succeeded"][0]["key"]}


def test_a_report_that_cannot_be_written_does_not_fail_the_invocation(quick, monkeypatch, caplog):
    monkeypatch.setenv("REPORT_PREFIX", "r/")
    monkeypatch.setenv("REPORT_BUCKET", "no-such-report-bucket-url2s3")
    response = run(quick)
    assert response["report"] is None and len(response["succeeded"]) == 1
    assert "could not write the report" in caplog.text


def test_one_json_log_line_per_item_and_a_summary(mixed, caplog):
    # WHEN the batch runs with logs captured
    with caplog.at_level(logging.INFO, logger="url2s3"):
        response = run(mixed)
    records = [r for r in caplog.records if r.name == "url2s3"]
    # THEN with Lambda's JSON log format each message is an object inside the record, not a string
    formatted = [json.loads(JsonFormatter().format(r)) for r in records]
    items = [f["message"] for f in formatted if f["message"]["event"] == "item"]
    assert sorted(i["outcome"] for i in items) == ["failed", "remaining", "succeeded"]
    ok = next(i for i in items if i["outcome"] == "succeeded")
    assert ok["key"] == response["succeeded"][0]["key"] and ok["bytes"] == 2500 and ok["attempts"] == 1
    assert {"url", "key", "outcome", "bytes", "ms", "attempts", "error"} <= set(ok)
    failed = next(i for i in items if i["outcome"] == "failed")
    assert "404" in failed["error"] and failed["retryable"] is False
    [summary] = [f["message"] for f in formatted if f["message"]["event"] == "summary"]
    assert summary["totals"] == response["totals"] and summary["source"] == "direct"
    # AND with the plain text format the message is the same JSON
    assert json.loads(logging.Formatter("%(message)s").format(records[0])) == formatted[0]["message"]


def emf_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def check_emf(doc: dict) -> None:
    """The structure the EMF specification asks for."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and abs(meta["Timestamp"] - time.time() * 1000) < 60_000
    assert isinstance(meta["CloudWatchMetrics"], list) and meta["CloudWatchMetrics"]
    for directive in meta["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str) and 0 < len(directive["Namespace"]) <= 255
        for dimension_set in directive["Dimensions"]:
            assert 0 < len(dimension_set) <= 30
            for name in dimension_set:
                assert isinstance(doc[name], str)  # every dimension is a top-level string member
        assert 0 < len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"} and metric["Unit"] in EMF_UNITS
            assert isinstance(doc[metric["Name"]], (int, float))  # every metric is a top-level number


def test_emf_metrics_on_stdout(mixed, monkeypatch, capsys):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "url2s3-test")
    monkeypatch.setenv("METRICS_NAMESPACE", "url2s3/test")
    response = run(mixed)  # with the slow origin: one of each outcome
    [doc] = emf_lines(capsys.readouterr().out)
    check_emf(doc)
    assert doc["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "url2s3/test"
    assert doc["FunctionName"] == "url2s3-test"
    assert (doc["Succeeded"], doc["Failed"], doc["Remaining"], doc["Bytes"]) == (1, 1, 1, 2500)
    assert 0 < doc["Duration"] < 3200 and response["totals"]["bytes"] == 2500


def test_emf_can_be_turned_off(monkeypatch, capsys, bucket):
    monkeypatch.setenv("METRICS_NAMESPACE", "")
    run({"urls": [], "bucket": bucket})
    assert emf_lines(capsys.readouterr().out) == []


def outcome(i: int, status: str) -> Outcome:
    item = Item(i, f"https://e.com/{i:05d}.jpg", None, f"https://e.com/{i:05d}.jpg")
    return Outcome(item, status, key=f"e.com/{i:05d}.jpg" if status == "succeeded" else None, bytes=10,
                   error="HTTP 404 Not Found" if status == "failed" else None)


def test_bounds_keep_the_continuation_and_cut_the_least_needed_detail_first():
    outcomes = ([outcome(i, "succeeded") for i in range(1500)] + [outcome(i, "failed") for i in range(300)]
                + [outcome(i, "remaining") for i in range(300)])
    lists = shaping.item_lists(outcomes)
    continuation = {"urls": list(lists["remaining"]), "bucket": "b"}
    # past 1,000 succeeded entries the rest is only in the report, when there is one
    body = shaping.bounded({**lists, "continuation": continuation, "report": "r/1.json"}, 10_000_000)
    assert len(body["succeeded"]) == 1000 and body["omitted"] == {"succeeded": 500}
    # without a report, nothing is left out that fits
    body = shaping.bounded({**shaping.item_lists(outcomes), "continuation": continuation, "report": None},
                           10_000_000)
    assert len(body["succeeded"]) == 1500 and "omitted" not in body
    # a tight budget cuts succeeded, then remaining (it is in the continuation), then failed
    body = shaping.bounded({**shaping.item_lists(outcomes), "continuation": continuation}, 30_000)
    assert len(json.dumps(body)) <= 30_000
    assert body["succeeded"] == [] and body["remaining"] == [] and 0 < len(body["failed"]) < 300
    assert body["omitted"] == {"succeeded": 1500, "remaining": 300, "failed": 300 - len(body["failed"])}
    assert body["continuation"] == continuation
