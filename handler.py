"""Lambda entry point: validate the event, run the batch against the invocation's deadline, and
return succeeded / failed / remaining plus the event to invoke with next.

It raises only for an invalid event (ValueError naming the field) or invalid configuration; every
per-URL problem is returned in `failed`.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from config import Settings, load_settings
from deadline import Deadline
from transfer import BatchResult, Item, Target, run_list

log = logging.getLogger(__name__)
log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())

EVENT_FIELDS = {"urls", "bucket", "prefix"}
ITEM_FIELDS = {"url", "key"}
MAX_PREFIX_BYTES = 512  # leaves room for the derived part within S3's 1024-byte key limit


@dataclass(frozen=True)
class Request:
    items: list[Item]
    target: Target


def _item(index: int, given: Any) -> Item:
    where = f"urls[{index}]"
    if isinstance(given, str):
        return Item(index, given, None, given)
    if not isinstance(given, dict):
        raise ValueError(f"{where} must be a URL string or an object with 'url', not {type(given).__name__}")
    unknown = sorted(set(given) - ITEM_FIELDS)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; an item takes 'url' and optional 'key'")
    if not isinstance(given.get("url"), str):
        raise ValueError(f"{where}.url is required and must be a string")
    key = given.get("key")
    if key is not None and not isinstance(key, str):
        raise ValueError(f"{where}.key must be a string")
    return Item(index, given["url"], key, given)


def parse_event(event: Any, settings: Settings) -> Request:
    """Check the event's shape; raise ValueError naming the first field that is wrong."""
    if not isinstance(event, dict):
        raise ValueError(f"event must be a JSON object, not {type(event).__name__}")
    unknown = sorted(set(event) - EVENT_FIELDS)
    if unknown:
        raise ValueError(f"event has unknown field(s) {unknown}; expected {sorted(EVENT_FIELDS)}")
    urls = event.get("urls")
    if not isinstance(urls, list):
        raise ValueError("urls is required and must be a list of URL strings or {'url', 'key'} objects")
    bucket = event.get("bucket", settings.bucket)
    if not isinstance(bucket, str) or not bucket:
        raise ValueError("bucket is required: give it in the event or set the BUCKET environment variable")
    prefix = event.get("prefix", settings.prefix)
    if not isinstance(prefix, str) or len(prefix.encode("utf-8")) > MAX_PREFIX_BYTES:
        raise ValueError(f"prefix must be a string of at most {MAX_PREFIX_BYTES} bytes")
    return Request([_item(i, given) for i, given in enumerate(urls)], Target(bucket, prefix))


@functools.lru_cache(maxsize=8)
def s3_client(pool_size: int, endpoint_url: str | None, region: str | None, retry_mode: str) -> Any:
    """One client per container and configuration: clients are thread-safe and costly to build."""
    config = Config(max_pool_connections=pool_size, connect_timeout=5, read_timeout=60,
                    retries={"mode": retry_mode, "max_attempts": 5})
    return boto3.session.Session().client("s3", config=config, endpoint_url=endpoint_url,
                                          region_name=region)


def client_for(settings: Settings) -> Any:
    options = settings.transfer
    pool = options.workers * (options.part_concurrency + 1) + 4
    return s3_client(pool, os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                     os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                     settings.s3_retry_mode)


def shape_response(event: dict, result: BatchResult) -> dict:
    """The response: each input item exactly once, plus the event that finishes the job."""
    response: dict[str, Any] = {"succeeded": [], "failed": [], "remaining": [], "continuation": None}
    for o in result.outcomes:
        if o.status == "succeeded":
            response["succeeded"].append({"url": o.item.url, "key": o.key, "bytes": o.bytes,
                                          "content_type": o.content_type})
        elif o.status == "failed":
            response["failed"].append({"url": o.item.url, "error": o.error, "retryable": o.retryable})
        else:
            response["remaining"].append(o.item.given)
    if response["remaining"]:
        response["continuation"] = {**event, "urls": response["remaining"]}
    if result.error:
        response["error"] = result.error
    return response


def handler(event: Any, context: Any) -> dict:
    settings = load_settings()
    request = parse_event(event, settings)
    remaining_s = context.get_remaining_time_in_millis() / 1000
    deadline = Deadline.after(remaining_s - settings.safety_margin)
    log.info("batch of %d items, %.1f s left, bucket %s", len(request.items), remaining_s,
             request.target.bucket)
    result = run_list(request.items, request.target, client_for(settings), settings.transfer, deadline)
    response = shape_response(event, result)
    log.info("done: %d succeeded, %d failed, %d remaining", len(response["succeeded"]),
             len(response["failed"]), len(response["remaining"]))
    return response
