"""Run url2s3 locally exactly as Lambda would call it, re-invoking with the continuation.

Without arguments: starts moto's S3 server and an origin on loopback serving samples/ (plus one
broken URL), with a deadline short enough that the job takes more than one invocation.
With --urls and --bucket: your URL file into your bucket (real S3, or AWS_ENDPOINT_URL).
"""
from __future__ import annotations

import argparse
import http.server
import json
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLES = ROOT / "samples"
TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp",
         ".avif": "image/avif", ".svg": "image/svg+xml"}


class Context:
    """What Lambda passes as `context`, reduced to the part url2s3 uses."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


class SampleOrigin(http.server.BaseHTTPRequestHandler):
    """Serves samples/ like a distant CDN: a pause before each answer, then the bytes."""

    delay = 0.8

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = SAMPLES / self.path.lstrip("/").split("?")[0]
        time.sleep(self.delay)
        if not path.is_file() or path.parent != SAMPLES:
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", TYPES.get(path.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def start_local_world() -> tuple[str, list[str]]:
    """moto's S3 server and the sample origin on loopback; returns (bucket, urls)."""
    import boto3
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3_server.start()
    host, port = s3_server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "demo",
                       "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1",
                       "ALLOW_PRIVATE_NETWORKS": "true"})
    os.environ.setdefault("WORKERS", "2")
    os.environ.setdefault("SAFETY_MARGIN_MS", "1000")
    os.environ.setdefault("METRICS_NAMESPACE", "")  # no EMF lines in the demo's output
    bucket = "url2s3-demo"
    boto3.client("s3").create_bucket(Bucket=bucket)
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SampleOrigin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{origin.server_address[1]}"
    urls = [f"{base}/{p.name}" for p in sorted(SAMPLES.iterdir()) if p.suffix in TYPES]
    return bucket, urls + [f"{base}/missing.jpg"]


def read_urls(path: str) -> list:
    """One item a line: a URL, or a JSON object {"url", "key"} (the driver's format)."""
    items = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            items.append(json.loads(text) if text.startswith(("{", '"')) else text)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number}: not a URL or a JSON item: {exc}") from None
    return items


def run(event: dict, seconds: float) -> list[dict]:
    """Invoke until the continuation is null; returns every response."""
    import handler
    responses, stalled = [], 0
    while event is not None:
        started = time.monotonic()
        response = handler.handler(event, Context(seconds))
        responses.append(response)
        print(f"invocation {len(responses)}: {len(response['succeeded'])} stored, "
              f"{len(response['failed'])} failed, {len(response['remaining'])} remaining "
              f"({time.monotonic() - started:.1f} s of {seconds:g} s)")
        stalled = stalled + 1 if response["remaining"] and not (response["succeeded"] or response["failed"]) else 0
        if stalled >= 3:
            print("stopping: three invocations in a row made no progress")
            break
        event = response["continuation"]
    return responses


def print_table(responses: list[dict]) -> None:
    rows = [("stored", r["url"], r["key"], str(r["bytes"]), r["content_type"])
            for resp in responses for r in resp["succeeded"]]
    rows += [("FAILED", r["url"], "", "", r["error"] + (" (retryable)" if r["retryable"] else ""))
             for resp in responses for r in resp["failed"]]
    rows += [("LEFT", u if isinstance(u, str) else u["url"], "", "", "")
             for u in (responses[-1]["remaining"] if responses else [])]
    header = ("outcome", "url", "key", "bytes", "type / error")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_listing(bucket: str, prefix: str) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    print(f"\ns3://{bucket}/{prefix}")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    try:
        for page in pages:
            for obj in page.get("Contents", []):
                print(f"  {obj['Size']:>10}  {obj['Key']}")
    except (BotoCoreError, ClientError) as exc:  # no such bucket, no list permission
        print(f"  (cannot list: {exc})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", help="file of URLs, one per line (# comments allowed)")
    parser.add_argument("--bucket", help="target bucket (default: a local moto bucket)")
    parser.add_argument("--prefix", default=None, help="key prefix (default: demo/<run id>/ locally)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="remaining time each simulated invocation starts with (default 4 locally, 60 otherwise)")
    args = parser.parse_args()
    os.environ.setdefault("METRICS_NAMESPACE", "")  # no EMF lines between the progress lines
    if bool(args.urls) != bool(args.bucket):
        parser.error("--urls and --bucket go together (or give neither for the local demo)")
    if args.bucket:
        bucket, urls, seconds = args.bucket, read_urls(args.urls), args.seconds or 60.0
    else:
        bucket, urls = start_local_world()
        seconds = args.seconds or 4.0
    prefix = args.prefix if args.prefix is not None else ("" if args.bucket else f"demo/{uuid.uuid4().hex[:6]}/")
    print(f"{len(urls)} URLs -> s3://{bucket}/{prefix}  ({seconds:g} s per invocation)\n")
    responses = run({"urls": urls, "bucket": bucket, "prefix": prefix}, seconds)
    print()
    print_table(responses)
    print_listing(bucket, prefix)
    failed = sum(len(r["failed"]) for r in responses)
    return 1 if failed and args.bucket else 0


if __name__ == "__main__":
    sys.exit(main())
