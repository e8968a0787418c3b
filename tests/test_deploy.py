"""GIVEN moto's server on loopback and the real AWS CLI, WHEN deploy.sh runs against it through
AWS_ENDPOINT_URL, THEN the function, its zip, its role and policy are what was asked for; a rerun
changes nothing; a code change updates the code; an option change updates the configuration; and
bad invocations stop with one clear line before anything is created.

deploy.sh always runs from a temporary copy of the repository's top-level files, so the tests can
edit handler.py without touching the real one. A logging `aws` shim in front of the real CLI
records which commands deploy.sh ran (moto does not change LastModified on updates, so the command
log is what shows that a rerun sent no update)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
from conftest import ROOT

VENV_BIN = Path(sys.executable).parent
REAL_AWS = shutil.which("aws", path=str(VENV_BIN)) or shutil.which("aws")
POLICY_NAME = "url2s3-s3-and-logs"
BUCKET = "url2s3-deploy-test"

pytestmark = pytest.mark.skipif(REAL_AWS is None, reason="the AWS CLI (awscli) is not installed")


# helpers ---------------------------------------------------------------------------------------

def copy_repo(dest: Path, source: Path = ROOT) -> Path:
    """deploy.sh, the top-level *.py files and the state machine definition, nothing else (the zip
    must not need more)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in [source / "deploy.sh", *source.glob("*.py")]:
        shutil.copy2(path, dest / path.name)
    (dest / "statemachine").mkdir(exist_ok=True)
    for path in (source / "statemachine").glob("*.asl.json"):
        shutil.copy2(path, dest / "statemachine" / path.name)
    return dest


def aws_shim(directory: Path) -> Path:
    """An `aws` that appends its arguments to $AWS_CALL_LOG and runs the real CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "aws"
    shim.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "$AWS_CALL_LOG"\n'
                    f'exec "{REAL_AWS}" "$@"\n')
    shim.chmod(0o755)
    return directory


def base_env(endpoint: str, shim_dir: Path, log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_SESSION_TOKEN="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint, AWS_CALL_LOG=str(log),
               PATH=os.pathsep.join([str(shim_dir), str(VENV_BIN), env.get("PATH", "")]))
    return env


def run_deploy(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    if "AWS_CALL_LOG" in env:
        Path(env["AWS_CALL_LOG"]).write_text("")
    return subprocess.run([shutil.which("bash"), str(repo / "deploy.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=180)


def command_of(line: str) -> str:
    """'--region r lambda wait function-active-v2 --function-name f' -> 'lambda wait function-active-v2'"""
    words = line.split()
    while words and words[0].startswith("--"):
        words = words[2:]  # a global option and its value
    command = []
    for word in words:
        if word.startswith("--"):
            break
        command.append(word)
    return " ".join(command)


def calls(env: dict[str, str]) -> list[str]:
    """The `aws` commands of the last run, e.g. 'lambda update-function-code'."""
    return [command_of(line) for line in Path(env["AWS_CALL_LOG"]).read_text().splitlines()]


def ran(env: dict[str, str], command: str) -> bool:
    return any(line.startswith(command) for line in calls(env))


def local_sha(zip_path: Path) -> str:
    return base64.b64encode(hashlib.sha256(zip_path.read_bytes()).digest()).decode()


def printed_policy(stdout: str) -> dict:
    start = stdout.index(f"inline policy {POLICY_NAME}")
    return json.JSONDecoder().raw_decode(stdout[stdout.index("{", start):])[0]


def lambda_config(name: str) -> dict:
    return boto3.client("lambda").get_function_configuration(FunctionName=name)


def function_exists(name: str) -> bool:
    client = boto3.client("lambda")
    try:
        client.get_function(FunctionName=name)
        return True
    except client.exceptions.ResourceNotFoundException:
        return False


def role_exists(name: str) -> bool:
    iam = boto3.client("iam")
    try:
        iam.get_role(RoleName=name)
        return True
    except iam.exceptions.NoSuchEntityException:
        return False


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    return lines[0]


# a first deploy, shared by the read-back tests ---------------------------------------------------

@pytest.fixture(scope="module")
def first(tmp_path_factory, moto_endpoint):
    work = tmp_path_factory.mktemp("deploy")
    repo = copy_repo(work / "repo")
    env = base_env(moto_endpoint, aws_shim(work / "shim"), work / "calls.log")
    name = f"u2s-{uuid.uuid4().hex[:10]}"
    args = ["--function-name", name, "--bucket", BUCKET, "--prefix", "images/", "--memory", "512",
            "--timeout", "120", "--workers", "8", "--env", "LOG_LEVEL=DEBUG",
            "--zip-out", str(work / "built.zip")]
    result = run_deploy(repo, env, *args)
    assert result.returncode == 0, result.stderr
    return {"name": name, "repo": repo, "env": env, "args": args, "result": result,
            "zip": work / "built.zip", "calls": calls(env)}


def test_first_deploy_creates_the_function_as_asked(first):
    config = lambda_config(first["name"])
    assert config["Runtime"] == "python3.12"
    assert config["Handler"] == "handler.handler"
    assert config["MemorySize"] == 512
    assert config["Timeout"] == 120
    assert config["Architectures"] == ["arm64"]
    assert config["Environment"]["Variables"] == {"BUCKET": BUCKET, "PREFIX": "images/",
                                                  "WORKERS": "8", "LOG_LEVEL": "DEBUG"}
    assert config["Role"].endswith(f":role/url2s3-{first['name']}")
    assert "lambda create-function" in first["calls"]
    assert "lambda wait function-active-v2" in first["calls"]


def test_the_zip_holds_exactly_the_top_level_python_files(first):
    expected = sorted(p.name for p in first["repo"].glob("*.py"))
    with zipfile.ZipFile(first["zip"]) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == expected
        for info in infos:
            assert archive.read(info) == (first["repo"] / info.filename).read_bytes()
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
    # moto serves no code download (Code.Location is a made-up S3 URL), so the deployed code is
    # identified by its hash: the same as the zip deploy.sh wrote with --zip-out.
    assert lambda_config(first["name"])["CodeSha256"] == local_sha(first["zip"])
    assert f"CodeSha256 {local_sha(first['zip'])}" in first["result"].stdout


def test_the_role_and_policy_are_the_ones_printed(first):
    name, iam = first["name"], boto3.client("iam")
    role = iam.get_role(RoleName=f"url2s3-{name}")["Role"]
    statement = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert iam.list_role_policies(RoleName=f"url2s3-{name}")["PolicyNames"] == [POLICY_NAME]
    assert iam.list_attached_role_policies(RoleName=f"url2s3-{name}")["AttachedPolicies"] == []
    attached = iam.get_role_policy(RoleName=f"url2s3-{name}", PolicyName=POLICY_NAME)["PolicyDocument"]
    assert attached == printed_policy(first["result"].stdout)
    by_sid = {s["Sid"]: s for s in attached["Statement"]}
    assert set(by_sid) == {"OwnLogGroup", "WriteUnderPrefix"}
    assert sorted(by_sid["WriteUnderPrefix"]["Action"]) == ["s3:AbortMultipartUpload", "s3:PutObject"]
    assert by_sid["WriteUnderPrefix"]["Resource"] == f"arn:aws:s3:::{BUCKET}/images/*"
    group = f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{name}"
    assert by_sid["OwnLogGroup"]["Resource"] == [group, group + ":*"]
    assert sorted(by_sid["OwnLogGroup"]["Action"]) == [
        "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    assert all(s["Effect"] == "Allow" for s in attached["Statement"])


def test_an_unchanged_rerun_changes_nothing(first):
    before = lambda_config(first["name"])
    result = run_deploy(first["repo"], first["env"], *first["args"])
    assert result.returncode == 0, result.stderr
    after = lambda_config(first["name"])
    assert after["CodeSha256"] == before["CodeSha256"]
    assert after["LastModified"] == before["LastModified"]  # moto never changes it; see docstring
    for command in ("lambda update-function-code", "lambda update-function-configuration",
                    "lambda create-function", "iam put-role-policy", "iam create-role"):
        assert not ran(first["env"], command), calls(first["env"])
    assert "code unchanged" in result.stdout and "configuration unchanged" in result.stdout
    assert "policy unchanged" in result.stdout


def test_the_same_sources_give_the_same_zip_bytes(first, tmp_path):
    # A second copy with other mtimes, and a cache and tests next to the sources.
    other = copy_repo(tmp_path / "other", first["repo"])
    for path in other.glob("*.py"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    (other / "__pycache__").mkdir()
    (other / "__pycache__" / "handler.cpython-312.pyc").write_bytes(b"cache")
    (other / "tests").mkdir()
    (other / "tests" / "test_x.py").write_text("x = 1\n")
    (other / "notes.txt").write_text("not code\n")
    env = dict(first["env"], PATH=os.pathsep.join([str(VENV_BIN), os.environ["PATH"]]))
    env.pop("AWS_CALL_LOG")
    result = run_deploy(other, env, "--build-only", "--zip-out", str(tmp_path / "again.zip"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "again.zip").read_bytes() == first["zip"].read_bytes()


# code and configuration changes ----------------------------------------------------------------

def test_code_and_option_changes_update_only_what_changed(tmp_path, moto_endpoint):
    repo = copy_repo(tmp_path / "repo")
    env = base_env(moto_endpoint, aws_shim(tmp_path / "shim"), tmp_path / "calls.log")
    name = f"u2s-{uuid.uuid4().hex[:10]}"
    args = ["--function-name", name, "--bucket", BUCKET, "--prefix", "a/"]
    assert run_deploy(repo, env, *args).returncode == 0
    first_sha = lambda_config(name)["CodeSha256"]

    # WHEN handler.py changes THEN only the code is updated
    with (repo / "handler.py").open("a") as handler:
        handler.write("\n# a change\n")
    result = run_deploy(repo, env, *args, "--zip-out", str(tmp_path / "new.zip"))
    assert result.returncode == 0, result.stderr
    assert lambda_config(name)["CodeSha256"] == local_sha(tmp_path / "new.zip") != first_sha
    assert ran(env, "lambda update-function-code") and ran(env, "lambda wait function-updated-v2")
    assert not ran(env, "lambda update-function-configuration")

    # WHEN --memory and --prefix change THEN the configuration is updated (not the code), and the
    # policy's S3 resource follows the prefix
    result = run_deploy(repo, env, *args[:-1], "b/", "--memory", "2048")
    assert result.returncode == 0, result.stderr
    config = lambda_config(name)
    assert config["MemorySize"] == 2048 and config["Environment"]["Variables"]["PREFIX"] == "b/"
    assert "MemorySize: 1024 -> 2048" in result.stdout
    assert ran(env, "lambda update-function-configuration") and not ran(env, "lambda update-function-code")
    policy = boto3.client("iam").get_role_policy(RoleName=f"url2s3-{name}", PolicyName=POLICY_NAME)
    resources = [s["Resource"] for s in policy["PolicyDocument"]["Statement"]]
    assert f"arn:aws:s3:::{BUCKET}/b/*" in resources and f"arn:aws:s3:::{BUCKET}/a/*" not in resources
    assert ran(env, "iam put-role-policy")


# errors ----------------------------------------------------------------------------------------

def path_without_aws(tmp_path: Path) -> str:
    """PATH with python3 but without any directory that holds an `aws`."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python3").symlink_to(sys.executable)
    dirs = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "aws").exists()]
    path = os.pathsep.join([str(tools), *dirs])
    assert shutil.which("aws", path=path) is None
    return path


def no_credentials(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in env.items() if k not in
           ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    return env


@pytest.mark.parametrize("case, status, message", [
    ("no bucket", 2, "deploy.sh: error: no bucket given: pass --bucket BUCKET"),
    ("unknown option", 2, "deploy.sh: error: unknown option: --frobnicate"),
    ("bad value", 2, "deploy.sh: error: --memory must be 128-10240 MB, not 64"),
    ("unknown variable", 2, "deploy.sh: error: --env SECRET=1: expected NAME=VALUE with NAME one of"),
    ("aws missing", 1, "deploy.sh: error: aws CLI not found on PATH"),
    ("no credentials", 1, "deploy.sh: error: no usable AWS credentials"),
])
def test_bad_invocations_stop_with_one_line_and_create_nothing(case, status, message, tmp_path,
                                                               moto_endpoint):
    repo = copy_repo(tmp_path / "repo")
    env = base_env(moto_endpoint, aws_shim(tmp_path / "shim"), tmp_path / "calls.log")
    name = f"u2s-{uuid.uuid4().hex[:10]}"
    args = ["--function-name", name, "--bucket", BUCKET]
    if case == "no bucket":
        args = ["--function-name", name]
    elif case == "unknown option":
        args.append("--frobnicate")
    elif case == "bad value":
        args += ["--memory", "64"]
    elif case == "unknown variable":
        args += ["--env", "SECRET=1"]
    elif case == "aws missing":
        env["PATH"] = path_without_aws(tmp_path)
    else:
        env = no_credentials(env, tmp_path)
    result = run_deploy(repo, env, *args)
    assert result.returncode == status
    assert one_line(result.stderr).startswith(message)
    assert not function_exists(name) and not role_exists(f"url2s3-{name}")


def test_a_role_lambda_cannot_assume_is_retried_a_bounded_number_of_times(tmp_path, moto_endpoint):
    # moto answers CreateFunction with a role that does not exist exactly as real Lambda answers
    # while a new role is still propagating through IAM.
    repo = copy_repo(tmp_path / "repo")
    env = base_env(moto_endpoint, aws_shim(tmp_path / "shim"), tmp_path / "calls.log")
    env.update(DEPLOY_ROLE_RETRIES="2", DEPLOY_ROLE_RETRY_SLEEP="0")
    name = f"u2s-{uuid.uuid4().hex[:10]}"
    result = run_deploy(repo, env, "--function-name", name, "--bucket", BUCKET,
                        "--role-arn", f"arn:aws:iam::123456789012:role/missing-{name}")
    assert result.returncode == 1
    assert "retry 1/1" in result.stdout
    assert "cannot be assumed by Lambda" in one_line(result.stderr)
    assert calls(env).count("lambda create-function") == 2
    assert not function_exists(name) and not ran(env, "iam")


def test_help_lists_every_option(tmp_path):
    result = subprocess.run([shutil.which("bash"), str(ROOT / "deploy.sh"), "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == ""
    for option in ("--function-name", "--bucket", "--prefix", "--region", "--profile", "--memory",
                   "--timeout", "--workers", "--role-arn", "--runtime", "--env", "--zip-out"):
        assert option in result.stdout
