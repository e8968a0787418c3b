"""The shipped state machine (statemachine/url2s3.asl.json): it parses, names the function by the
placeholder deploy.sh fills in, retries Lambda's service errors, tolerates some failed batches,
and its child loop works against the response the handler really returns. The loop is run here by
a small interpreter of the few ASL features the child uses (payload templates with `.$` paths,
ResultSelector, Choice with IsNull / NumericEquals / And, Pass with InputPath), calling the real
handler for the Task, on a batch built from a CSV manifest with the Map's own ItemBatcher."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import keys_in, lambda_context, warm_s3_client

import handler

ASL = Path(__file__).resolve().parent.parent / "statemachine" / "url2s3.asl.json"
LAMBDA_SERVICE_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException",
                         "Lambda.SdkClientException", "Lambda.TooManyRequestsException"}
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:url2s3"


@pytest.fixture(scope="module")
def definition() -> dict:
    text = ASL.read_text()
    assert text.count("${FunctionArn}") == 1 and text.count("${ResultsPrefix}") == 1
    return json.loads(text.replace("${FunctionArn}", FUNCTION_ARN).replace("${ResultsPrefix}", "_url2s3/map/"))


def the_map(definition: dict) -> dict:
    [state] = [s for s in definition["States"].values() if s["Type"] == "Map"]
    return state


# a tiny ASL interpreter (JSONPath mode) -----------------------------------------------------------

def path_get(data, path: str):
    """`$` or `$.a.b`; a missing field fails, as States.Runtime would."""
    assert path == "$" or path.startswith("$."), path
    for part in path[2:].split(".") if path != "$" else []:
        data = data[part]
    return data


def fill(template: dict, data) -> dict:
    """A payload template: `name.$` fields take the value at their path."""
    return {(key[:-2] if key.endswith(".$") else key):
            path_get(data, value) if key.endswith(".$") else fill(value, data) if isinstance(value, dict) else value
            for key, value in template.items()}


def holds(rule: dict, data) -> bool:
    if "And" in rule:
        return all(holds(r, data) for r in rule["And"])
    if "Or" in rule:
        return any(holds(r, data) for r in rule["Or"])
    if "Not" in rule:
        return not holds(rule["Not"], data)
    value = path_get(data, rule["Variable"])
    if "IsNull" in rule:
        return (value is None) is rule["IsNull"]
    if "NumericEquals" in rule:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == rule["NumericEquals"]
    raise AssertionError(f"comparison not known to this interpreter: {rule}")


def run_child(processor: dict, batch: dict, invoke) -> tuple[str, dict, list]:
    """Run the child workflow on one batch; (final state, its data, the states visited)."""
    name, data, visited = processor["StartAt"], batch, []
    while True:
        state = processor["States"][name]
        visited.append(name)
        kind = state["Type"]
        if kind in ("Succeed", "Fail"):
            return name, data, visited
        if kind == "Task":
            assert state["Resource"] == "arn:aws:states:::lambda:invoke"
            params = fill(state["Parameters"], data)
            result = {"ExecutedVersion": "$LATEST", "Payload": invoke(params["FunctionName"], params["Payload"]),
                      "StatusCode": 200}
            data = fill(state["ResultSelector"], result) if "ResultSelector" in state else result
        elif kind == "Pass":
            data = path_get(data, state.get("InputPath", "$"))
        elif kind == "Choice":
            name = next((r["Next"] for r in state["Choices"] if holds(r, data)), state.get("Default"))
            continue
        name = state["Next"]
        assert len(visited) < 100, visited


def batches(map_state: dict, csv_text: str, execution_input: dict) -> list[dict]:
    """What the ItemReader (CSV, header in the first row) and the ItemBatcher hand each child."""
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    batcher = map_state["ItemBatcher"]
    size = batcher["MaxItemsPerBatch"]
    batch_input = fill(batcher["BatchInput"], execution_input)
    return [{"Items": rows[i:i + size], "BatchInput": batch_input} for i in range(0, len(rows), size)]


def calling_handler(calls: list, seconds: float):
    def invoke(function: str, payload: dict) -> dict:
        assert function == FUNCTION_ARN
        response = json.loads(json.dumps(handler.handler(payload, lambda_context(seconds))))
        calls.append((payload, response))
        return response
    return invoke


# tests --------------------------------------------------------------------------------------------

def test_definition_names_the_function_and_its_safety_nets(definition):
    state = the_map(definition)
    assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert state["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert state["ItemReader"]["ReaderConfig"]["InputType"] in ("CSV", "JSONL")
    assert set(state["ItemReader"]["Parameters"]) == {"Bucket.$", "Key.$"}
    assert 0 < state["ToleratedFailurePercentage"] < 100 and state["ItemBatcher"]["MaxItemsPerBatch"] > 0
    tasks = [s for s in state["ItemProcessor"]["States"].values() if s["Type"] == "Task"]
    [task] = tasks
    assert task["Parameters"]["FunctionName"] == FUNCTION_ARN
    [retry] = task["Retry"]
    assert set(retry["ErrorEquals"]) == LAMBDA_SERVICE_ERRORS and retry["MaxAttempts"] >= 3
    assert state["ResultWriter"]["Parameters"]["Prefix"] == "_url2s3/map/"


def test_the_child_loop_follows_the_real_continuation_until_null(definition, monkeypatch, s3, bucket,
                                                                shared_origin):
    # GIVEN a CSV manifest (url,key) and invocations short enough that one call cannot finish
    monkeypatch.setenv("WORKERS", "1")
    warm_s3_client()
    urls = [shared_origin.url(f"/slow?delay=0.4&size={700 + i}&seed={i}") for i in range(5)]
    csv_text = "url,key\n" + "".join(f"{u},{'sm/' + str(i) + '.jpg' if i % 2 else ''}\n" for i, u in enumerate(urls))
    state = the_map(definition)
    [batch] = batches(state, csv_text, {"manifest": {"bucket": bucket, "key": "urls.csv"},
                                        "bucket": bucket, "prefix": "sfn/"})
    # WHEN the child workflow runs with the real handler as its Task
    calls: list = []
    final, data, visited = run_child(state["ItemProcessor"], batch, calling_handler(calls, seconds=3.3))
    # THEN it looped through the continuation (same shape, same BatchInput) and ended in Succeed
    assert final == "Batch done" and data["continuation"] is None and len(calls) >= 2
    assert "Send the continuation" in visited
    first_payload, first_response = calls[0]
    assert first_payload == batch and first_response["continuation"] is not None
    for (_, response), (payload, _) in zip(calls, calls[1:]):
        assert payload == response["continuation"] and payload["BatchInput"] == batch["BatchInput"]
    # AND each URL was stored exactly once over the loop
    done = [r for _, response in calls for r in response["succeeded"]]
    assert sorted(r["url"] for r in done) == sorted(urls)
    keys = {r["key"] for r in done}
    assert keys_in(s3, bucket) == keys and {"sfn/sm/1.jpg", "sfn/sm/3.jpg"} < keys
    assert all(k.startswith("sfn/") for k in keys)  # a blank CSV key column means a derived key


def test_the_child_fails_when_a_call_makes_no_progress(definition, shared_origin):
    # GIVEN a batch whose target bucket does not exist (every item stays remaining)
    state = the_map(definition)
    [batch] = batches(state, f"url\n{shared_origin.url('/ok?size=500')}\n",
                      {"manifest": {"bucket": "m", "key": "k"}, "bucket": "no-such-bucket-url2s3", "prefix": ""})
    calls: list = []
    final, data, _ = run_child(state["ItemProcessor"], batch, calling_handler(calls, seconds=20))
    # THEN the loop does not spin: the child fails once, counted against the tolerated percentage
    assert final == "No progress" and len(calls) == 1
    assert "NoSuchBucket" in calls[0][1]["error"] and data["totals"]["remaining"] == 1
