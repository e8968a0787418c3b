"""Self-continuation (SELF_CONTINUE=true): with items left, the function invokes itself
asynchronously with the continuation and a hop counter, and a chain stops at MAX_HOPS and at a
hop that made no progress. The invoker is replaced by one that records what it was asked to send
(the chain is then run here, hop by hop); one test sends the real Invoke to moto's Lambda."""
from __future__ import annotations

import io
import json
import time
import urllib.request
import uuid
import zipfile

import boto3
import pytest
from awslambdaric.lambda_context import LambdaContext
from botocore.exceptions import ClientError
from conftest import lambda_context, warm_s3_client

import handler
import selfinvoke

OWN_ARN = "arn:aws:lambda:us-east-1:123456789012:function:url2s3"  # what lambda_context() carries


@pytest.fixture
def sent(monkeypatch):
    """Self-continuation on, and every asynchronous invoke recorded instead of sent."""
    monkeypatch.setenv("SELF_CONTINUE", "true")
    monkeypatch.setenv("WORKERS", "1")
    warm_s3_client()
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(selfinvoke, "invoke_async", lambda name, payload: calls.append((name, json.loads(payload))))
    return calls


def follow(event: dict, sent: list, seconds: float) -> list[dict]:
    """Run the chain here: each recorded invoke becomes the next call."""
    responses = [handler.handler(event, lambda_context(seconds))]
    while len(sent) == len(responses):
        responses.append(handler.handler(sent[-1][1], lambda_context(seconds)))
    return responses


def test_chain_stops_at_the_hop_limit(sent, monkeypatch, bucket, shared_origin):
    # GIVEN MAX_HOPS=2 and a list that needs more than three short invocations
    monkeypatch.setenv("MAX_HOPS", "2")
    urls = [shared_origin.url(f"/slow?delay=0.3&size=500&seed={i}") for i in range(16)]
    event = {"urls": urls, "bucket": bucket}
    # WHEN the chain runs (1 s to start items per call: at most 4 of these each time)
    responses = follow(event, sent, seconds=3.5)
    # THEN hops 1 and 2 were invoked on the function itself, each with the previous continuation
    assert [(name, payload["hop"]) for name, payload in sent] == [(OWN_ARN, 1), (OWN_ARN, 2)]
    for response, (_, payload) in zip(responses, sent):
        assert payload == {**response["continuation"], "hop": payload["hop"]}
        assert response["self_continue"] == {"invoked": True, "hop": payload["hop"]}
    # AND hop 2 made progress but stopped, saying why, with its continuation still in the response
    last = responses[-1]
    assert len(responses) == 3 and last["succeeded"] and last["continuation"]["hop"] == 2
    assert last["self_continue"]["invoked"] is False and last["self_continue"]["reason"].startswith("hop limit")


def test_chain_stops_when_a_hop_makes_no_progress(sent, bucket, shared_origin):
    # GIVEN an invocation with too little time to start anything (deadline after the margin < 1 s)
    event = {"urls": [shared_origin.url("/ok?size=500")], "bucket": bucket, "hop": 4}
    # WHEN
    response = handler.handler(event, lambda_context(2.0))
    # THEN it does not invoke itself again
    assert sent == [] and response["remaining"] == event["urls"]
    assert response["self_continue"]["invoked"] is False
    assert response["self_continue"]["reason"].startswith("no progress") and response["self_continue"]["hop"] == 4


def test_a_manifest_chain_continues_itself_to_the_end(sent, s3, bucket, shared_origin):
    lines = [shared_origin.url(f"/slow?delay=0.3&size=500&seed={i}") for i in range(5)]
    s3.put_object(Bucket=bucket, Key="list.txt", Body="\n".join(lines).encode())
    event = {"manifest": {"bucket": bucket, "key": "list.txt"}, "bucket": bucket, "prefix": "chain/"}
    responses = follow(event, sent, seconds=3.0)
    assert len(responses) >= 2 and responses[-1]["continuation"] is None
    assert "self_continue" not in responses[-1]
    assert sorted(r["url"] for resp in responses for r in resp["succeeded"]) == sorted(lines)


def test_a_continuation_too_large_for_an_asynchronous_invoke_is_left_to_the_caller(sent, monkeypatch,
                                                                                 bucket, shared_origin):
    monkeypatch.setattr(selfinvoke, "ASYNC_PAYLOAD_MAX", 100)
    urls = [shared_origin.url("/ok?size=100")] + [shared_origin.url(f"/slow?delay=0.7&seed={i}") for i in range(4)]
    response = handler.handler({"urls": urls, "bucket": bucket}, lambda_context(3.0))
    assert sent == [] and response["succeeded"] and response["continuation"]
    assert "more than the 100 an asynchronous invoke takes" in response["self_continue"]["reason"]


def test_a_refused_invoke_is_reported_not_raised(monkeypatch, bucket, shared_origin):
    monkeypatch.setenv("SELF_CONTINUE", "true")
    monkeypatch.setenv("WORKERS", "1")

    def refuse(name, payload):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "Invoke")
    monkeypatch.setattr(selfinvoke, "invoke_async", refuse)
    urls = [shared_origin.url("/ok?size=100")] + [shared_origin.url(f"/slow?delay=0.7&seed={i}") for i in range(4)]
    response = handler.handler({"urls": urls, "bucket": bucket}, lambda_context(3.0))
    assert response["self_continue"]["invoked"] is False
    assert "asynchronous invoke failed" in response["self_continue"]["reason"]
    assert "AccessDeniedException" in response["self_continue"]["reason"]


def test_self_continuation_is_off_by_default(bucket, shared_origin, monkeypatch):
    monkeypatch.setattr(selfinvoke, "invoke_async", lambda *a: pytest.fail("invoked without SELF_CONTINUE"))
    response = handler.handler({"urls": [shared_origin.url("/ok")], "bucket": bucket}, lambda_context(2.0))
    assert response["continuation"] and "self_continue" not in response


@pytest.fixture
def moto_function(moto_endpoint):
    """A function in moto's Lambda, which answers invokes without running code (no Docker)."""
    config_url = moto_endpoint + "/moto-api/config"
    original = json.loads(urllib.request.urlopen(config_url, timeout=10).read())["lambda"]

    def configure(value: dict) -> None:
        request = urllib.request.Request(config_url, method="POST", data=json.dumps({"lambda": value}).encode())
        urllib.request.urlopen(request, timeout=10).read()
    configure({"use_docker": False})
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "lambda.amazonaws.com"}}]}
    name = f"selfinvoke-{uuid.uuid4().hex[:8]}"
    role = boto3.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    function = boto3.client("lambda").create_function(
        FunctionName=name, Runtime="python3.12", Handler="handler.handler", Role=role["Role"]["Arn"],
        Code={"ZipFile": code.getvalue()})
    yield function["FunctionArn"]
    configure(original)


def test_the_real_invoker_sends_an_asynchronous_invoke(moto_function, monkeypatch, bucket, shared_origin):
    monkeypatch.setenv("SELF_CONTINUE", "true")
    monkeypatch.setenv("WORKERS", "1")
    sent = []
    monkeypatch.setattr(selfinvoke, "_lambda_client", _recording(selfinvoke._lambda_client, sent))
    context = LambdaContext(uuid.uuid4().hex, None, None, int((time.time() + 3.0) * 1000), moto_function)
    urls = [shared_origin.url("/ok?size=100")] + [shared_origin.url(f"/slow?delay=0.7&seed={i}") for i in range(4)]
    response = handler.handler({"urls": urls, "bucket": bucket}, context)
    assert response["self_continue"] == {"invoked": True, "hop": 1}
    [(function, invocation_type, payload)] = sent
    assert function == moto_function and invocation_type == "Event"
    assert json.loads(payload) == {**response["continuation"], "hop": 1}


def _recording(factory, sent: list):
    """The real client factory, with each Invoke's parameters kept once botocore built them."""
    def client(region):
        real = factory(region)
        real.meta.events.register(
            "provide-client-params.lambda.Invoke",
            lambda params, **_: sent.append((params["FunctionName"], params["InvocationType"], params["Payload"])),
            unique_id="url2s3-test-recorder")
        return real
    return client
