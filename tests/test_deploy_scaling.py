"""GIVEN moto's server and the real AWS CLI, WHEN deploy.sh runs with the scale-out options
(--report-prefix, --self-continue, --manifest-bucket, --sqs-queue-arn, --state-machine), THEN the
function's environment and role policy hold exactly what those options need, the SQS event source
mapping and the Step Functions state machine exist as asked, a rerun changes nothing, a changed
option updates only what it touches, and a run without the options removes what they added.

One function goes through four runs, each a module fixture that depends on the one before and
keeps a snapshot of what moto holds right after it (so a test reads the state of its own run,
whatever ran since): A with every option, B the same again, C with some options changed or
dropped, D with none. Each deploy run costs about a second per `aws` call (CLI start-up), which
is why the scenarios share runs.

moto does not check IAM: it never answers "role cannot be assumed" or "execution role does not
have permissions to call ReceiveMessage". Run A therefore goes through an `aws` shim that fails
the first create-event-source-mapping and create-state-machine with AWS's own error texts, so
the bounded retries are exercised; every other answer is moto's."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from conftest import ROOT
from test_deploy import (BUCKET, POLICY_NAME, REAL_AWS, aws_shim, base_env, calls, copy_repo,
                         function_exists, one_line, printed_policy, role_exists, run_deploy)

pytestmark = pytest.mark.skipif(REAL_AWS is None, reason="the AWS CLI (awscli) is not installed")

ACCOUNT = "123456789012"
REGION = "us-east-1"
LISTS = "url2s3-lists-test"
REPORTS = "url2s3-reports-test"
SFN_POLICY = "url2s3-state-machine"
ASL = ROOT / "statemachine" / "url2s3.asl.json"
MUTATING = re.compile(r"^\S+ (create|update|put|delete|tag|untag|attach|detach)-")

# AWS's answers while IAM changes propagate (moto never gives them); see the module docstring.
FAULTS = [
    {"match": "lambda create-event-source-mapping", "left": 1,
     "message": "An error occurred (InvalidParameterValueException) when calling the "
                "CreateEventSourceMapping operation: The provided execution role does not have "
                "permissions to call ReceiveMessage on SQS"},
    {"match": "stepfunctions create-state-machine", "left": 1,
     "message": "An error occurred (AccessDeniedException) when calling the CreateStateMachine "
                "operation: Neither the global service principal states.amazonaws.com, nor the "
                "regional one is authorized to assume the provided role."},
]


# helpers ---------------------------------------------------------------------------------------

def faulty_shim(directory: Path) -> Path:
    """An `aws` that logs its arguments to $AWS_CALL_LOG like test_deploy's shim and, while the
    JSON list in $AWS_FAULTS has a matching entry left, fails with its message instead of
    running the real CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "aws"
    shim.write_text(f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["AWS_CALL_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
path = os.environ.get("AWS_FAULTS")
if path:
    with open(path) as f:
        faults = json.load(f)
    for fault in faults:
        if fault["match"] in " ".join(args) and fault["left"] > 0:
            fault["left"] -= 1
            with open(path, "w") as f:
                json.dump(faults, f)
            sys.stderr.write("\\n" + fault["message"] + "\\n")
            sys.exit(254)
os.execv({str(REAL_AWS)!r}, [{str(REAL_AWS)!r}, *args])
""")
    shim.chmod(0o755)
    return directory


def aws_clients(endpoint: str) -> dict:
    """boto3 clients for moto, built explicitly: module fixtures run before conftest's autouse
    fixture has pointed the environment at moto."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name=REGION)
    return {name: session.client(name, endpoint_url=endpoint)
            for name in ("lambda", "iam", "sqs", "stepfunctions")}


def mutations(env: dict) -> list[str]:
    return [c for c in calls(env) if MUTATING.match(c)]


def sids(policy: dict) -> list[str]:
    return [s["Sid"] for s in policy["Statement"]]


def statement(policy: dict, sid: str) -> dict:
    [found] = [s for s in policy["Statement"] if s["Sid"] == sid]
    return found


def printed_policy_named(stdout: str, name: str) -> dict:
    start = stdout.index(f"inline policy {name}")
    return json.JSONDecoder().raw_decode(stdout[stdout.index("{", start):])[0]


def the_map(definition: dict) -> dict:
    [state] = [s for s in definition["States"].values() if s["Type"] == "Map"]
    return state


def strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def path_get(data, path: str):
    for part in path[2:].split("."):
        data = data[part]
    return data


def snapshot(aws: dict, name: str, machine: str) -> dict:
    """What moto holds for the function, its role, its mappings and the state machine."""
    lam, iam = aws["lambda"], aws["iam"]
    config = lam.get_function_configuration(FunctionName=name)
    mappings = lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
    for mapping in mappings:
        mapping["Tags"] = lam.list_tags(Resource=mapping["EventSourceMappingArn"])["Tags"]
    state = {"env": config["Environment"]["Variables"], "mappings": mappings,
             "policy": iam.get_role_policy(RoleName=f"url2s3-{name}", PolicyName=POLICY_NAME)["PolicyDocument"],
             "machine": None, "sfn_role": None, "sfn_policy": None}
    arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine}"
    try:
        state["machine"] = aws["stepfunctions"].describe_state_machine(stateMachineArn=arn)
    except aws["stepfunctions"].exceptions.StateMachineDoesNotExist:
        return state
    state["sfn_role"] = iam.get_role(RoleName=f"url2s3-sfn-{machine}")["Role"]
    state["sfn_policy"] = iam.get_role_policy(RoleName=f"url2s3-sfn-{machine}",
                                              PolicyName=SFN_POLICY)["PolicyDocument"]
    return state


# the scenario: runs A, B, C, D of one function -------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory, moto_endpoint):
    work = tmp_path_factory.mktemp("deploy-scaling")
    tag = uuid.uuid4().hex[:8]
    aws = aws_clients(moto_endpoint)
    # VisibilityTimeout 300 s: above the 120 s function timeout, below the recommended 6 x 120
    queue_url = aws["sqs"].create_queue(QueueName=f"u2s-q-{tag}",
                                        Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    hand_url = aws["sqs"].create_queue(QueueName=f"u2s-hand-{tag}")["QueueUrl"]
    arn_of = lambda url: aws["sqs"].get_queue_attributes(  # noqa: E731
        QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    env = base_env(moto_endpoint, aws_shim(work / "shim"), work / "calls.log")
    env["DEPLOY_ROLE_RETRY_SLEEP"] = "0"
    name, machine = f"u2s-{tag}", f"u2s-map-{tag}"
    return {"work": work, "aws": aws, "env": env, "repo": copy_repo(work / "repo"), "name": name,
            "machine": machine, "queue": arn_of(queue_url), "hand_queue": arn_of(hand_url),
            "function_arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "machine_arn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine}"}


def deploy(world: dict, *args: str, faults: list | None = None) -> dict:
    env = dict(world["env"])
    if faults:  # the Python shim costs a few milliseconds a call: only where it is needed
        path = world["work"] / "faults.json"
        path.write_text(json.dumps(faults))
        shims = faulty_shim(world["work"] / "faulty-shim")
        env.update(AWS_FAULTS=str(path), PATH=env["PATH"].replace(str(world["work"] / "shim"), str(shims), 1))
    result = run_deploy(world["repo"], env, "--function-name", world["name"], "--bucket", BUCKET,
                        "--prefix", "images/", "--timeout", "120", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return {"result": result, "calls": calls(env), "mutations": mutations(env),
            "state": snapshot(world["aws"], world["name"], world["machine"])}


def args_a(world: dict) -> list[str]:
    return ["--report-prefix", "_url2s3/reports/", "--report-bucket", REPORTS,
            "--self-continue", "--max-hops", "20",
            "--manifest-bucket", LISTS, "--manifest-prefix", "lists/",
            "--sqs-queue-arn", world["queue"],
            "--state-machine", world["machine"], "--manifest-format", "jsonl",
            "--map-concurrency", "7", "--map-batch-size", "250", "--tolerated-failure-percentage", "10",
            "--env", "METRICS_NAMESPACE=url2s3-test", "--env", "ORIGIN_ATTEMPTS=2"]


@pytest.fixture(scope="module")
def run_a(world):
    return deploy(world, *args_a(world), faults=FAULTS)


@pytest.fixture(scope="module")
def run_b(world, run_a):
    return deploy(world, *args_a(world))


@pytest.fixture(scope="module")
def run_c(world, run_b):
    return deploy(world, "--report-prefix", "images/reports/",
                  "--manifest-bucket", LISTS, "--manifest-prefix", "lists/",
                  "--sqs-queue-arn", world["queue"], "--sqs-batch-size", "100", "--sqs-batching-window", "5",
                  "--state-machine", world["machine"], "--map-concurrency", "3",
                  "--results-prefix", "_url2s3/runs/")


@pytest.fixture(scope="module")
def run_d(world, run_c):
    # a mapping made by hand for another queue: deploy.sh did not create it, so it stays
    hand = world["aws"]["lambda"].create_event_source_mapping(
        FunctionName=world["name"], EventSourceArn=world["hand_queue"], BatchSize=5)
    world["hand_uuid"] = hand["UUID"]
    return deploy(world)


# A: everything on ------------------------------------------------------------------------------

def test_a_sets_exactly_the_variables_of_the_options(run_a):
    assert run_a["state"]["env"] == {
        "BUCKET": BUCKET, "PREFIX": "images/", "WORKERS": "16",
        "REPORT_PREFIX": "_url2s3/reports/", "REPORT_BUCKET": REPORTS,
        "SELF_CONTINUE": "true", "MAX_HOPS": "20",
        "METRICS_NAMESPACE": "url2s3-test", "ORIGIN_ATTEMPTS": "2"}


def test_a_adds_one_least_privilege_statement_per_option(run_a, world):
    policy = run_a["state"]["policy"]
    assert policy == printed_policy(run_a["result"].stdout)
    assert sids(policy) == ["OwnLogGroup", "WriteUnderPrefix", "WriteReports", "InvokeItself",
                            "ReadManifests", "ConsumeQueue"]
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in policy["Statement"])
    assert statement(policy, "WriteUnderPrefix")["Resource"] == f"arn:aws:s3:::{BUCKET}/images/*"
    reports = statement(policy, "WriteReports")
    assert reports["Action"] == ["s3:PutObject"]
    assert reports["Resource"] == f"arn:aws:s3:::{REPORTS}/_url2s3/reports/*"
    invoke = statement(policy, "InvokeItself")
    assert invoke["Action"] == ["lambda:InvokeFunction"]
    assert invoke["Resource"] == [world["function_arn"], world["function_arn"] + ":*"]
    manifests = statement(policy, "ReadManifests")
    assert manifests["Action"] == ["s3:GetObject"]
    assert manifests["Resource"] == f"arn:aws:s3:::{LISTS}/lists/*"
    queue = statement(policy, "ConsumeQueue")
    assert sorted(queue["Action"]) == ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    assert queue["Resource"] == world["queue"]


def test_a_creates_the_queue_mapping_with_partial_batch_responses(run_a, world):
    [mapping] = run_a["state"]["mappings"]
    assert mapping["EventSourceArn"] == world["queue"]
    assert mapping["FunctionArn"] == world["function_arn"]
    assert mapping["BatchSize"] == 10
    assert mapping.get("MaximumBatchingWindowInSeconds", 0) == 0
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["Tags"] == {"url2s3:managed-by": "deploy.sh"}


def test_a_warns_about_a_visibility_timeout_below_six_function_timeouts(run_a, world):
    stderr = run_a["result"].stderr
    assert "deploy.sh: warning: queue " in stderr
    assert "VisibilityTimeout 300 s" in stderr and "6 x 120 = 720 s" in stderr
    assert "error" not in stderr


def test_a_retries_while_new_permissions_propagate(run_a):
    # the shim failed the first attempt of each with AWS's own error text
    assert run_a["calls"].count("lambda create-event-source-mapping") == 2
    assert run_a["calls"].count("stepfunctions create-state-machine") == 2
    out = run_a["result"].stdout
    assert "SQS permissions have not reached Lambda yet (IAM changes take a few seconds); retry 1/9" in out
    assert "role not assumable by Step Functions yet (new IAM roles take a few seconds); retry 1/9" in out


def test_a_creates_the_state_machine_from_the_asl_file(run_a, world):
    machine = run_a["state"]["machine"]
    assert machine["type"] == "STANDARD"
    assert machine["roleArn"] == run_a["state"]["sfn_role"]["Arn"]
    definition = json.loads(machine["definition"])
    assert not [s for s in strings(definition) if "${" in s]
    state = the_map(definition)
    [task] = [s for s in state["ItemProcessor"]["States"].values() if s["Type"] == "Task"]
    assert task["Parameters"]["FunctionName"] == world["function_arn"]
    assert state["ResultWriter"]["Parameters"]["Prefix"] == "_url2s3/map-results/"
    assert state["ItemReader"]["ReaderConfig"] == {"InputType": "JSONL"}
    assert state["MaxConcurrency"] == 7
    assert state["ItemBatcher"]["MaxItemsPerBatch"] == 250
    assert state["ToleratedFailurePercentage"] == 10
    # nothing else differs from the shipped file (with its placeholders filled in)
    shipped = json.loads(ASL.read_text().replace("${FunctionArn}", world["function_arn"])
                         .replace("${ResultsPrefix}", "_url2s3/map-results/"))
    for field in ("MaxConcurrency", "ToleratedFailurePercentage"):
        the_map(shipped)[field] = state[field]
    the_map(shipped)["ItemBatcher"]["MaxItemsPerBatch"] = 250
    the_map(shipped)["ItemReader"]["ReaderConfig"] = {"InputType": "JSONL"}
    assert definition["States"] == shipped["States"] and definition["StartAt"] == shipped["StartAt"]


def test_a_gives_the_state_machine_its_own_least_privilege_role(run_a, world):
    role, policy = run_a["state"]["sfn_role"], run_a["state"]["sfn_policy"]
    assert role["RoleName"] == f"url2s3-sfn-{world['machine']}"
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "states.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
    assert policy == printed_policy_named(run_a["result"].stdout, SFN_POLICY)
    fn, machine = world["function_arn"], world["machine_arn"]
    assert {s["Sid"]: (sorted(s["Action"]), s["Resource"]) for s in policy["Statement"]} == {
        "InvokeFunction": (["lambda:InvokeFunction"], [fn, fn + ":*"]),
        "ReadManifests": (["s3:GetObject"], f"arn:aws:s3:::{LISTS}/lists/*"),
        "WriteResults": (["s3:AbortMultipartUpload", "s3:GetObject", "s3:ListMultipartUploadParts",
                          "s3:PutObject"], f"arn:aws:s3:::{BUCKET}/_url2s3/map-results/*"),
        "StartChildRuns": (["states:StartExecution"], machine),
        "WatchChildRuns": (["states:DescribeExecution", "states:StopExecution"],
                           f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{world['machine']}/*"),
    }


def test_a_prints_a_start_command_whose_input_fits_the_item_reader(run_a, world):
    out = run_a["result"].stdout
    assert f"created state machine {world['machine_arn']}" in out
    line = out[out.index("aws stepfunctions start-execution"):].replace("\\\n", " ").splitlines()[0]
    words = shlex.split(line)
    assert words[words.index("--state-machine-arn") + 1] == world["machine_arn"]
    execution = json.loads(words[words.index("--input") + 1])
    assert execution == {"manifest": {"bucket": LISTS, "key": "lists/urls.jsonl"},
                         "bucket": BUCKET, "prefix": "images/"}
    # the paths the deployed ItemReader and ItemBatcher read resolve in that input
    state = the_map(json.loads(run_a["state"]["machine"]["definition"]))
    reader = state["ItemReader"]["Parameters"]
    assert path_get(execution, reader["Bucket.$"]) == LISTS
    assert path_get(execution, reader["Key.$"]).startswith("lists/")
    assert {path_get(execution, p) for p in state["ItemBatcher"]["BatchInput"].values()} == {BUCKET, "images/"}


# B: the same again -----------------------------------------------------------------------------

def test_b_an_identical_rerun_changes_nothing(run_a, run_b):
    assert run_b["mutations"] == [], run_b["calls"]
    out = run_b["result"].stdout
    for said in ("policy unchanged", "code unchanged", "configuration unchanged",
                 "unchanged (batch size 10, window 0 s, ReportBatchItemFailures)",
                 "state machine unchanged"):
        assert said in out
    assert out.count("policy unchanged") == 2  # the function's role and the state machine's
    before, after = run_a["state"], run_b["state"]
    for part in ("env", "policy", "sfn_policy"):
        assert after[part] == before[part]
    assert after["machine"]["definition"] == before["machine"]["definition"]
    assert [(m["UUID"], m["BatchSize"]) for m in after["mappings"]] == \
        [(m["UUID"], m["BatchSize"]) for m in before["mappings"]]


# C: options changed or dropped -----------------------------------------------------------------

def test_c_dropped_options_take_their_variables_and_statements_with_them(run_c):
    # --report-bucket, --self-continue and the --env pairs are gone; the new report prefix lies
    # under images/, which WriteUnderPrefix already allows
    assert run_c["state"]["env"] == {"BUCKET": BUCKET, "PREFIX": "images/", "WORKERS": "16",
                                     "REPORT_PREFIX": "images/reports/"}
    assert sids(run_c["state"]["policy"]) == ["OwnLogGroup", "WriteUnderPrefix", "ReadManifests",
                                              "ConsumeQueue"]
    assert run_c["state"]["policy"] == printed_policy(run_c["result"].stdout)


def test_c_updates_the_mapping_in_place(run_a, run_c, world):
    mine = [m for m in run_c["state"]["mappings"] if m["EventSourceArn"] == world["queue"]]
    assert [m["UUID"] for m in mine] == [run_a["state"]["mappings"][0]["UUID"]]
    assert mine[0]["BatchSize"] == 100 and mine[0]["MaximumBatchingWindowInSeconds"] == 5
    assert mine[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "lambda update-event-source-mapping" in run_c["mutations"]
    assert "lambda create-event-source-mapping" not in run_c["calls"]
    assert "lambda delete-event-source-mapping" not in run_c["calls"]
    out = run_c["result"].stdout
    assert "BatchSize: 10 -> 100" in out and "MaximumBatchingWindowInSeconds: 0 -> 5" in out


def test_c_updates_the_state_machine_and_its_policy(run_c, world):
    state = the_map(json.loads(run_c["state"]["machine"]["definition"]))
    assert state["ItemReader"]["ReaderConfig"] == {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}
    assert (state["MaxConcurrency"], state["ItemBatcher"]["MaxItemsPerBatch"],
            state["ToleratedFailurePercentage"]) == (3, 500, 5)
    assert state["ResultWriter"]["Parameters"]["Prefix"] == "_url2s3/runs/"
    assert statement(run_c["state"]["sfn_policy"], "WriteResults")["Resource"] == \
        f"arn:aws:s3:::{BUCKET}/_url2s3/runs/*"
    assert "stepfunctions update-state-machine" in run_c["mutations"]
    assert "stepfunctions create-state-machine" not in run_c["calls"]
    [map_name] = [n for n, s in json.loads(ASL.read_text())["States"].items() if s["Type"] == "Map"]
    assert f"definition States.{map_name}.MaxConcurrency: 7 -> 3" in run_c["result"].stdout
    assert run_c["mutations"].count("iam put-role-policy") == 2
    assert "iam create-role" not in run_c["calls"]


# D: no scale-out option at all ------------------------------------------------------------------

def test_d_removes_every_variable_and_statement_the_options_added(run_d):
    assert run_d["state"]["env"] == {"BUCKET": BUCKET, "PREFIX": "images/", "WORKERS": "16"}
    assert sids(run_d["state"]["policy"]) == ["OwnLogGroup", "WriteUnderPrefix"]


def test_d_deletes_the_mapping_it_created_and_only_that_one(run_c, run_d, world):
    [ours] = [m["UUID"] for m in run_c["state"]["mappings"]]
    assert [m["UUID"] for m in run_d["state"]["mappings"]] == [world["hand_uuid"]]
    assert run_d["mutations"].count("lambda delete-event-source-mapping") == 1
    assert f"deleted event source mapping {ours}" in run_d["result"].stdout
    assert f"left event source mapping {world['hand_uuid']}" in run_d["result"].stdout


def test_d_leaves_the_state_machine_alone(run_c, run_d):
    # documented: a state machine is a resource of its own, deleted by hand
    assert run_d["state"]["machine"]["definition"] == run_c["state"]["machine"]["definition"]
    assert not [c for c in run_d["calls"] if c.startswith("stepfunctions")]
    assert run_d["mutations"] == ["iam put-role-policy", "lambda update-function-configuration",
                                  "lambda delete-event-source-mapping"]


# errors ----------------------------------------------------------------------------------------

def quick_env(tmp_path: Path, endpoint: str) -> dict:
    return base_env(endpoint, aws_shim(tmp_path / "shim"), tmp_path / "calls.log")


QUEUE = f"arn:aws:sqs:{REGION}:{ACCOUNT}:some-queue"


@pytest.mark.parametrize("args, message", [
    (["--max-hops", "5"], "--max-hops needs --self-continue"),
    (["--state-machine", "m"], "--state-machine needs --manifest-bucket"),
    (["--report-bucket", REPORTS], "--report-bucket needs --report-prefix"),
    (["--manifest-prefix", "lists/"], "--manifest-prefix needs --manifest-bucket"),
    (["--sqs-batch-size", "5"], "--sqs-batch-size needs --sqs-queue-arn"),
    (["--map-concurrency", "5"], "--map-concurrency needs --state-machine"),
    (["--report-prefix", "/reports/"], "--report-prefix must not start with /"),
    (["--report-prefix", "rep*"], "--report-prefix must not contain * or ?"),
    (["--report-prefix", ""], "--report-prefix must not be empty"),
    (["--manifest-bucket", LISTS, "--manifest-prefix", "a?b"], "--manifest-prefix must not contain * or ?"),
    (["--manifest-bucket", "Not_A_Bucket"], "invalid --manifest-bucket name"),
    (["--self-continue", "--max-hops", "10001"], "--max-hops must be 0-10000"),
    (["--self-continue=yes"], "option --self-continue takes no value"),
    (["--sqs-queue-arn", QUEUE, "--sqs-batch-size", "100"],
     "--sqs-batch-size above 10 needs --sqs-batching-window of at least 1 second"),
    (["--sqs-queue-arn", QUEUE + ".fifo", "--sqs-batch-size", "20"], "--sqs-batch-size must be 1-10 for a FIFO queue"),
    (["--sqs-queue-arn", QUEUE + ".fifo", "--sqs-batching-window", "2"], "--sqs-batching-window is not supported for FIFO"),
    (["--sqs-queue-arn", "arn:aws:sqs:eu-west-1:123456789012:q"], "--sqs-queue-arn is in eu-west-1, the function in us-east-1"),
    (["--sqs-queue-arn", "https://sqs.us-east-1.amazonaws.com/123456789012/q"], "invalid --sqs-queue-arn"),
    (["--state-machine", "m", "--manifest-bucket", LISTS, "--manifest-format", "xml"], "--manifest-format must be csv or jsonl"),
    (["--state-machine", "m", "--manifest-bucket", LISTS, "--results-prefix", "/x/"], "--results-prefix must not start with /"),
    (["--state-machine", "bad name", "--manifest-bucket", LISTS], "invalid --state-machine name"),
    (["--env", "REPORT_PREFIX=r/"], "--env REPORT_PREFIX=r/: REPORT_PREFIX is set by --report-prefix, not by --env"),
    (["--env", "SELF_CONTINUE=true"], "--env SELF_CONTINUE=true: SELF_CONTINUE is set by --self-continue"),
    (["--env", "MAX_HOPS=3"], "--env MAX_HOPS=3: MAX_HOPS is set by --max-hops (with --self-continue)"),
])
def test_invalid_combinations_stop_before_any_aws_call(args, message, tmp_path, moto_endpoint):
    env = quick_env(tmp_path, moto_endpoint)
    name = f"u2s-{uuid.uuid4().hex[:10]}"
    result = run_deploy(copy_repo(tmp_path / "repo"), env, "--function-name", name, "--bucket", BUCKET, *args)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith(f"deploy.sh: error: {message}")
    assert calls(env) == []  # not even sts: nothing can have been created
    assert not function_exists(name) and not role_exists(f"url2s3-{name}")


@pytest.mark.parametrize("case, message", [
    ("short visibility", "VisibilityTimeout 60 s, shorter than the function timeout (120 s), which Lambda refuses"),
    ("no such queue", "does not exist"),
    ("express machine", "is EXPRESS; a Distributed Map over S3 needs STANDARD"),
])
def test_what_aws_holds_can_stop_the_run_before_anything_is_created(case, message, tmp_path, moto_endpoint):
    thing = f"u2s-x-{uuid.uuid4().hex[:8]}"
    if case == "short visibility":
        boto3.client("sqs").create_queue(QueueName=thing, Attributes={"VisibilityTimeout": "60"})
    if case == "express machine":
        boto3.client("stepfunctions").create_state_machine(
            name=thing, type="EXPRESS", roleArn=f"arn:aws:iam::{ACCOUNT}:role/any",
            definition='{"StartAt": "a", "States": {"a": {"Type": "Pass", "End": true}}}')
        args = ["--manifest-bucket", LISTS, "--state-machine", thing]
    else:
        args = ["--sqs-queue-arn", f"arn:aws:sqs:{REGION}:{ACCOUNT}:{thing}"]
    env = quick_env(tmp_path, moto_endpoint)
    name = f"u2s-{uuid.uuid4().hex[:10]}"
    result = run_deploy(copy_repo(tmp_path / "repo"), env, "--function-name", name, "--bucket", BUCKET,
                        "--timeout", "120", *args)
    assert result.returncode == 1
    assert message in one_line(result.stderr)
    assert mutations(env) == [] and calls(env)[0] == "sts get-caller-identity" and len(calls(env)) <= 3
    assert not function_exists(name) and not role_exists(f"url2s3-{name}")


# the --env allow-list and the help -------------------------------------------------------------

def variables_read_by_the_function() -> set[str]:
    """Every environment variable the runtime code reads by name (AWS_* ones are Lambda's)."""
    pattern = re.compile(r"""(?:env|environ)\.get\(\s*"([A-Z0-9_]+)"|_(?:number|whole|flag)\(\s*env,\s*"([A-Z0-9_]+)\"""")
    names = {a or b for path in ROOT.glob("*.py") for a, b in pattern.findall(path.read_text())}
    return {n for n in names if not n.startswith("AWS_")}


def test_every_variable_the_function_reads_has_exactly_one_way_in():
    script = (ROOT / "deploy.sh").read_text()
    tuning = set(re.search(r'TUNING_VARS=" ([A-Z0-9_ ]+) "', script).group(1).split())
    dedicated = set(re.findall(r"^\s+([A-Z0-9_]+)\) printf -- '--", script, re.MULTILINE))
    read = variables_read_by_the_function()
    assert {"REPORT_PREFIX", "MAX_HOPS", "MEMORY_BUDGET_MB", "METRICS_NAMESPACE"} <= read  # the scan works
    assert read == tuning | dedicated, (read - tuning - dedicated, (tuning | dedicated) - read)
    assert not tuning & dedicated


def test_help_lists_every_scaling_option():
    result = subprocess.run(["bash", str(ROOT / "deploy.sh"), "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    for option in ("--report-prefix", "--report-bucket", "--self-continue", "--max-hops",
                   "--manifest-bucket", "--manifest-prefix", "--sqs-queue-arn", "--sqs-batch-size",
                   "--sqs-batching-window", "--state-machine", "--manifest-format", "--results-prefix",
                   "--map-concurrency", "--map-batch-size", "--tolerated-failure-percentage",
                   "MEMORY_BUDGET_MB", "ALLOWED_HOSTS", "S3_RETRY_MODE", "METRICS_NAMESPACE"):
        assert option in result.stdout
