"""GIVEN a list of URLs, WHEN tools/drive.py runs it through the function, THEN every URL ends up
stored, failed or (when the driver gives up, saying why) unfinished, exactly once.

The loop runs against handler.handler in-process with a short real deadline, against scripted
invokers for the give-up rules, and through boto3's real Invoke against moto's server (which runs
no code without Docker: it echoes the payload, or returns queued canned responses, or, in its
Docker mode with no Docker, a FunctionError)."""
from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
import uuid
import zipfile
from io import BytesIO
from pathlib import Path

import boto3
import pytest
from conftest import ROOT, SAMPLES, check_accounting, keys_in, lambda_context

sys.path.insert(0, str(ROOT / "tools"))
import drive  # noqa: E402


class LocalLambda:
    """handler.handler called in-process as Lambda calls it, with a fresh `seconds` deadline per
    invocation, and JSON in between as on the wire."""

    def __init__(self, seconds: float) -> None:
        import handler

        self.handler, self.seconds, self.events = handler.handler, seconds, []

    def __call__(self, payload: dict) -> dict:
        event = json.loads(json.dumps(payload))
        self.events.append(event)
        response = self.handler(event, lambda_context(self.seconds))
        check_accounting(event, response)
        return json.loads(json.dumps(response))


def write_urls(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stuck(payload: dict) -> dict:
    """A function that never gets anything done."""
    return {"succeeded": [], "failed": [], "remaining": payload["urls"], "continuation": payload}


# the loop against the real handler ----------------------------------------------------------------

def test_loop_follows_continuations_until_every_url_is_stored_or_failed(
        monkeypatch, s3, bucket, httpserver, raw_origin, tmp_path):
    # GIVEN 3 quick images, a 404, and 4 slow ones (1.6 s each) on 2 workers with 2.5 s of
    # working time per invocation: 6.4 s of slow work cannot fit in one invocation.
    monkeypatch.setenv("WORKERS", "2")
    png = (SAMPLES / "diagram.png").read_bytes()
    quick = []
    for n in range(3):
        httpserver.expect_request(f"/img/{n}.png").respond_with_data(png, content_type="image/png")
        quick.append(httpserver.url_for(f"/img/{n}.png"))
    httpserver.expect_request("/missing.png").respond_with_data("gone", status=404)
    missing = httpserver.url_for("/missing.png")
    slow = [raw_origin.url(f"/trickle?size=16&interval=0.1&n={n}") for n in range(4)]
    lines = ["# a comment", *quick[:2], json.dumps({"url": quick[2], "key": "custom/q.png"}), "",
             json.dumps({"url": missing, "key": "custom/missing.png"}), *slow]
    urls = write_urls(tmp_path / "urls.txt", lines)
    lam, said = LocalLambda(seconds=4.0), []

    # WHEN
    status = drive.main([str(urls), "--function-name", "url2s3", "--bucket", bucket, "--prefix",
                         "img/", "--failed-out", str(tmp_path / "failed.json")], lam, said.append)

    # THEN it took more than one invocation, and each URL is stored or failed exactly once
    assert len(lam.events) >= 2, said
    assert all(e["bucket"] == bucket and e["prefix"] == "img/" for e in lam.events)
    assert status == drive.EXIT_FAILED
    report = json.loads((tmp_path / "failed.json").read_text())
    assert [(f["url"], f["item"]) for f in report["failed"]] == [
        (missing, {"url": missing, "key": "custom/missing.png"})]
    assert report["unfinished"] == []
    assert report["summary"]["stored"] == 7 and report["summary"]["invocations"] == len(lam.events)
    stored = keys_in(s3, bucket)
    assert len(stored) == 7 and all(k.startswith("img/") for k in stored)
    assert "img/custom/q.png" in stored
    progress_lines = [line for line in said if " call " in line]
    assert len(progress_lines) == len(lam.events)
    first_left = int(re.search(r"remaining (\d+) of 8", progress_lines[0]).group(1))
    assert 1 <= first_left <= 4 and "remaining 0 of 8" in progress_lines[-1]
    assert any(line.startswith("summary: 7 stored") and "1 failed, 0 unfinished" in line for line in said)
    assert any(line.startswith("  FAILED (permanent) " + missing) for line in said)
    assert all("MB/s" in line and "images/s" in line for line in progress_lines)


# the give-up rule -------------------------------------------------------------------------------

def test_no_progress_several_times_in_a_row_stops_and_says_why(tmp_path):
    urls = write_urls(tmp_path / "urls.txt", [f"https://example.com/{n}.jpg" for n in range(5)])
    calls, said = [], []

    def invoke(payload: dict) -> dict:
        calls.append(payload)
        return stuck(payload)

    status = drive.main([str(urls), "--function-name", "f", "--batch-size", "2",
                         "--failed-out", str(tmp_path / "out.json")], invoke, said.append)

    assert status == drive.EXIT_GAVE_UP
    assert len(calls) == drive.MAX_STALLS  # the first payload only; then it stopped
    assert any(line.startswith("stopping: 3 invocations in a row finished none") for line in said)
    report = json.loads((tmp_path / "out.json").read_text())
    assert sorted(u["url"] for u in report["unfinished"]) == sorted(
        f"https://example.com/{n}.jpg" for n in range(5))
    reasons = [u["reason"] for u in report["unfinished"]]
    assert sum(r.startswith("gave up: 3 invocations in a row") for r in reasons) == 2
    assert sum(r.startswith("not attempted") for r in reasons) == 3


def test_progress_between_stalls_resets_the_count():
    # Each payload: two empty invocations, then one that finishes an item; never three in a row.
    items = [f"https://example.com/{n}.jpg" for n in range(3)]
    state = {"calls": 0}

    def invoke(payload: dict) -> dict:
        state["calls"] += 1
        if state["calls"] % 3:
            return stuck(payload)
        first, rest = payload["urls"][0], payload["urls"][1:]
        return {"succeeded": [{"url": first, "key": "k", "bytes": 10, "content_type": "image/jpeg"}],
                "failed": [], "remaining": rest,
                "continuation": {**payload, "urls": rest} if rest else None}

    progress = drive.drive(items, {}, invoke, say=lambda line: None)
    assert progress.stored == 3 and progress.unfinished == [] and state["calls"] == 9
    assert drive.summarize(progress, lambda line: None) == drive.EXIT_OK


def test_a_retryable_invoke_error_is_retried_then_reported():
    attempts = []

    def invoke(payload: dict) -> dict:
        attempts.append(payload)
        raise drive.InvokeError("FunctionError Unhandled: Sandbox.Timedout: Task timed out", True)

    progress = drive.drive(["https://example.com/a.jpg"], {}, invoke, say=lambda line: None, pause=0.01)
    assert len(attempts) == 1 + drive.RETRIES
    assert [u["reason"] for u in progress.unfinished] == [
        "invocation failed: FunctionError Unhandled: Sandbox.Timedout: Task timed out"]


def test_function_errors_are_classified():
    invalid = drive.function_error(b'{"errorType": "ValueError", "errorMessage": "urls is required"}',
                                   "Unhandled")
    timeout = drive.function_error(b'{"errorType": "Sandbox.Timedout", "errorMessage": "timed out"}',
                                   "Unhandled")
    assert not invalid.retryable and "urls is required" in str(invalid)
    assert timeout.retryable and "Sandbox.Timedout" in str(timeout)


def test_a_response_that_loses_an_item_is_an_error():
    with pytest.raises(drive.InvokeError, match="account for every URL"):
        drive.check_response({"urls": ["a", "b"]}, {"succeeded": [], "failed": [],
                                                    "remaining": ["a"], "continuation": {"urls": ["a"]}})


# input and payloads -----------------------------------------------------------------------------

def test_payloads_stay_under_the_byte_and_item_caps_for_a_large_list():
    # ~2 kB per URL, so the byte cap (not the item cap) decides where most payloads end
    items = [f"https://images.example.com/{n:06d}/" + "x" * (1000 + n % 2000) + ".jpg" for n in range(20_000)]
    items[7] = {"url": "https://images.example.com/custom.png", "key": "custom/p.png"}
    base = {"bucket": "b", "prefix": "images/"}

    payloads = drive.split_payloads(items, base)

    sizes = [len(json.dumps(p).encode()) for p in payloads]
    assert max(sizes) <= drive.MAX_PAYLOAD_BYTES < 6 * 1024 * 1024
    assert sum(len(p["urls"]) < drive.MAX_ITEMS for p in payloads[:-1]) > 30
    assert all(len(p["urls"]) <= drive.MAX_ITEMS for p in payloads)
    assert [i for p in payloads for i in p["urls"]] == items
    assert all({k: v for k, v in p.items() if k != "urls"} == base for p in payloads)
    # greedy: no payload could have taken the next item without crossing a cap
    for payload, following in zip(payloads, payloads[1:]):
        bigger = {**payload, "urls": payload["urls"] + following["urls"][:1]}
        assert (len(json.dumps(bigger).encode()) > drive.MAX_PAYLOAD_BYTES
                or len(bigger["urls"]) > drive.MAX_ITEMS)
    assert len(drive.split_payloads(items[:5000], base, max_items=100)) == 50


def test_an_item_larger_than_the_cap_is_refused():
    with pytest.raises(ValueError, match="larger than 1000 bytes"):
        drive.split_payloads(["https://e.com/" + "x" * 2000], {}, max_bytes=1000)


def test_input_lines_plain_json_and_comments(tmp_path):
    path = write_urls(tmp_path / "in.txt", [
        "# heading", "https://e.com/a.jpg", "   ", '{"url": "https://e.com/b.png", "key": "k/b.png"}',
        '"https://e.com/c.gif"', "  https://e.com/d.jpg  "])
    assert drive.read_items(path) == ["https://e.com/a.jpg", {"url": "https://e.com/b.png", "key": "k/b.png"},
                                      "https://e.com/c.gif", "https://e.com/d.jpg"]
    bad = write_urls(tmp_path / "bad.txt", ["https://e.com/a.jpg", '{"link": "https://e.com"}'])
    with pytest.raises(ValueError, match="bad.txt:2"):
        drive.read_items(bad)


# the real boto3 Invoke against moto's server ------------------------------------------------------

def moto_api(endpoint: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(endpoint + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return json.loads(text) if text else {}


@pytest.fixture
def moto_lambda(moto_endpoint):
    """Put moto's Lambda in the given mode (use_docker or not) and create a function there;
    restore moto's mode afterwards (its server is shared by the whole session)."""
    original = moto_api(moto_endpoint, "/moto-api/config")["lambda"]

    def create(use_docker: bool) -> str:
        moto_api(moto_endpoint, "/moto-api/config", {"lambda": {"use_docker": use_docker}})
        name = f"drive-{uuid.uuid4().hex[:10]}"
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                         "Principal": {"Service": "lambda.amazonaws.com"}}]}
        role = boto3.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        code = BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.write(ROOT / "handler.py", "handler.py")
        boto3.client("lambda").create_function(
            FunctionName=name, Runtime="python3.12", Handler="handler.handler",
            Role=role["Role"]["Arn"], Code={"ZipFile": code.getvalue()})
        return name

    yield create
    moto_api(moto_endpoint, "/moto-api/config", {"lambda": original})


def recording_client() -> tuple[object, list]:
    """The driver's own boto3 Lambda client, with every request it sends kept for inspection."""
    client, sent = drive.lambda_client("us-east-1"), []
    client.meta.events.register("before-send.lambda.Invoke", lambda request, **_: sent.append(request))
    return client, sent


def header(request, name: str) -> str:
    value = request.headers[name]
    return value.decode() if isinstance(value, bytes) else value


def test_the_real_invoker_sends_a_synchronous_invoke_with_the_payload(moto_lambda):
    name = moto_lambda(use_docker=False)
    client, sent = recording_client()
    payload = {"urls": ["https://e.com/a b.png", {"url": "https://e.com/é.jpg", "key": "k/é.jpg"}],
               "bucket": "b", "prefix": "p/"}

    echoed = drive.lambda_invoker(name, client)(payload)

    # moto's Docker-less Lambda answers with the body it received: the server got this payload
    assert echoed == payload
    assert len(sent) == 1
    assert sent[0].url.endswith(f"/2015-03-31/functions/{name}/invocations")
    assert header(sent[0], "X-Amz-Invocation-Type") == "RequestResponse"
    assert json.loads(sent[0].body) == payload


def test_the_driver_follows_continuations_through_the_real_invoke(moto_lambda, moto_endpoint, tmp_path):
    name = moto_lambda(use_docker=False)
    a, b, c = (f"https://e.com/{n}.jpg" for n in "abc")
    first = {"succeeded": [{"url": a, "key": "p/a.jpg", "bytes": 2_000_000, "content_type": "image/jpeg"}],
             "failed": [{"url": b, "error": "HTTP 404 from origin", "retryable": False}],
             "remaining": [c], "continuation": {"bucket": "bk", "urls": [c]}}
    second = {"succeeded": [{"url": c, "key": "p/c.jpg", "bytes": 1_000_000, "content_type": "image/jpeg"}],
              "failed": [], "remaining": [], "continuation": None}
    moto_api(moto_endpoint, "/moto-api/static/lambda-simple/response",
             {"results": [json.dumps(first), json.dumps(second)], "region": "us-east-1"})
    client, sent = recording_client()
    said = []

    status = drive.main([str(write_urls(tmp_path / "u.txt", [a, b, c])), "--function-name", name,
                         "--bucket", "bk", "--failed-out", str(tmp_path / "f.json")],
                        drive.lambda_invoker(name, client), said.append)

    assert status == drive.EXIT_FAILED
    assert [json.loads(r.body) for r in sent] == [{"bucket": "bk", "urls": [a, b, c]}, first["continuation"]]
    assert json.loads((tmp_path / "f.json").read_text())["failed"] == [{**first["failed"][0], "item": b}]
    assert any(line.startswith("summary: 2 stored (3.0 MB), 1 failed, 0 unfinished") for line in said)


@pytest.mark.skipif(os.path.exists("/var/run/docker.sock") or "DOCKER_HOST" in os.environ,
                    reason="moto would run the function in Docker")
def test_a_function_error_from_the_real_invoke_is_retried_and_reported(moto_lambda):
    # moto in Docker mode, without Docker, answers Invoke with FunctionError "Handled" and a
    # non-JSON body explaining that it could not run Docker.
    name = moto_lambda(use_docker=True)
    client, sent = recording_client()
    said = []

    progress = drive.drive(["https://e.com/a.jpg"], {}, drive.lambda_invoker(name, client), said.append,
                           pause=0.01)

    assert len(sent) == 1 + drive.RETRIES
    assert [u["url"] for u in progress.unfinished] == ["https://e.com/a.jpg"]
    assert progress.unfinished[0]["reason"].startswith("invocation failed: FunctionError Handled")
    assert drive.summarize(progress, said.append) == drive.EXIT_GAVE_UP
    assert any(line.startswith("stopping: invocation failed: FunctionError Handled") for line in said)
