"""Self-continuation: when items remain, the function invokes itself asynchronously with the
continuation, so a long list finishes without any scheduler on the caller's side.

A chain must end on its own, whatever Lambda's recursion guard does: each hop carries a counter
(`hop`), and a hop does not start another when the counter reached MAX_HOPS, or when it made no
progress (nothing stored or failed: the next hop would see the same items, the same way).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("url2s3")

ASYNC_PAYLOAD_MAX = 1_000_000  # bytes; Lambda takes up to 1 MB in an asynchronous invoke


def function_name(context: Any) -> str | None:
    """The function's own ARN as invoked (keeps an alias or version), else its name."""
    arn = getattr(context, "invoked_function_arn", None)
    return arn or os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or None


@functools.lru_cache(maxsize=4)
def _lambda_client(region: str | None) -> Any:
    """Short timeouts: the invoke happens inside the time kept back for the response."""
    config = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
    return boto3.session.Session().client("lambda", config=config, region_name=region)


def invoke_async(function: str, payload: bytes) -> None:
    """One asynchronous invocation (InvocationType Event). Tests replace this function."""
    parts = function.split(":")
    region = parts[3] if function.startswith("arn:") and len(parts) > 3 else None
    response = _lambda_client(region or os.environ.get("AWS_REGION")).invoke(
        FunctionName=function, InvocationType="Event", Payload=payload)
    if response.get("StatusCode") != 202:
        raise RuntimeError(f"Lambda answered status {response.get('StatusCode')} instead of 202")


def stop_reason(hop: int, max_hops: int, progressed: bool, size: int, function: str | None) -> str | None:
    """Why this hop must not start the next one, or None when it may."""
    if hop >= max_hops:
        return f"hop limit reached: this was hop {hop} of MAX_HOPS={max_hops}"
    if not progressed:
        return "no progress: this invocation stored or failed nothing, the next would do the same"
    if size > ASYNC_PAYLOAD_MAX:
        return (f"continuation is {size} bytes, more than the {ASYNC_PAYLOAD_MAX} an asynchronous "
                "invoke takes; invoke with it yourself, or use an S3 manifest")
    if not function:
        return "function name unknown (no invoked_function_arn, no AWS_LAMBDA_FUNCTION_NAME)"
    return None


def continue_chain(continuation: dict, hop: int, max_hops: int, progressed: bool, context: Any) -> dict:
    """Invoke the next hop, or say why not; the result goes into the response as `self_continue`."""
    function = function_name(context)
    payload = json.dumps({**continuation, "hop": hop + 1}).encode("utf-8")
    reason = stop_reason(hop, max_hops, progressed, len(payload), function)
    if reason is None:
        try:
            invoke_async(function, payload)
        except (ClientError, BotoCoreError, RuntimeError) as exc:
            reason = f"asynchronous invoke failed: {exc}"[:400]
    if reason is not None:
        log.warning("self-continuation stopped at hop %d: %s", hop, reason)
        return {"invoked": False, "hop": hop, "reason": reason}
    log.info("self-continuation: invoked hop %d of %s", hop + 1, function)
    return {"invoked": True, "hop": hop + 1}
