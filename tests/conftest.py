"""Shared fixtures: fake AWS credentials, moto's real HTTP server as S3, origins on loopback, a
Lambda context with a real deadline, and `invoke`, which calls the handler as Lambda does and then
checks the invariants every call must keep."""
from __future__ import annotations

import hashlib
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest
from awslambdaric.lambda_context import LambdaContext
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from origins import RawOrigin  # noqa: E402

SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, moto_endpoint):
    """Fake credentials and every AWS call pointed at moto's server; loopback origins allowed."""
    for name in ("AWS_PROFILE", "BUCKET", "PREFIX", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                 "https_proxy", "AWS_ENDPOINT_URL_S3", "CA_BUNDLE", "MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("ALLOW_PRIVATE_NETWORKS", "true")
    monkeypatch.setenv("SAFETY_MARGIN_MS", "1500")


@pytest.fixture
def s3(aws_env):
    return boto3.client("s3")


@pytest.fixture
def bucket(s3):
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def tls_origin(tmp_path):
    """An HTTPS origin on localhost with a certificate from a CA made for the test, and the path
    of that CA's PEM file (for CA_BUNDLE)."""
    import ssl
    import trustme
    from pytest_httpserver import HTTPServer
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server = HTTPServer(host="localhost", port=0, ssl_context=context)
    server.start()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    yield server, str(tmp_path / "ca.pem")
    server.clear()
    server.stop()


@pytest.fixture
def raw_origin():
    origin = RawOrigin().start()
    yield origin
    origin.stop()


def lambda_context(seconds: float) -> LambdaContext:
    """The context class Lambda's own Python runtime builds, with a deadline `seconds` away."""
    deadline_ms = int((time.time() + seconds) * 1000)
    return LambdaContext(uuid.uuid4().hex, None, None, deadline_ms,
                         "arn:aws:lambda:us-east-1:123456789012:function:url2s3")


def item_url(item) -> str:
    return item if isinstance(item, str) else item["url"]


def check_accounting(event: dict, response: dict) -> None:
    """Every input item appears exactly once across succeeded, failed and remaining."""
    given = Counter(item_url(i) for i in event["urls"])
    seen = Counter([r["url"] for r in response["succeeded"]] + [r["url"] for r in response["failed"]]
                   + [item_url(i) for i in response["remaining"]])
    assert seen == given
    if response["remaining"]:
        assert response["continuation"] == {**event, "urls": response["remaining"]}
    else:
        assert response["continuation"] is None


def open_uploads(s3, bucket: str) -> list:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


@pytest.fixture
def invoke(s3):
    """Call handler.handler like Lambda; check accounting, time to spare and no open uploads."""
    import handler

    def call(event: dict, seconds: float = 60.0, spare: float = 0.5) -> dict:
        started = time.monotonic()
        response = handler.handler(event, lambda_context(seconds))
        elapsed = time.monotonic() - started
        assert elapsed <= seconds - spare, f"returned with {seconds - elapsed:.2f}s left"
        check_accounting(event, response)
        if event.get("bucket"):
            assert open_uploads(s3, event["bucket"]) == []
        return response

    return call


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(s3, bucket: str, key: str) -> tuple[bytes, dict]:
    obj = s3.get_object(Bucket=bucket, Key=key)
    return obj["Body"].read(), obj


def keys_in(s3, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


@pytest.fixture(scope="session")
def shared_origin():
    """One RawOrigin for the whole session, for tests that do not count its requests or
    connections: stopping an origin takes half a second (socketserver's poll interval)."""
    origin = RawOrigin().start()
    yield origin
    origin.stop()


def warm_s3_client() -> None:
    """Build the S3 client the handler will use for the current environment, as a warm Lambda
    container has it: tests with second-scale deadlines then spend them on their items."""
    import handler
    from config import load_settings
    handler.client_for(load_settings())
