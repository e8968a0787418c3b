"""The per-invocation report: every item's result as one JSON object in S3.

Why a report: the response must stay small (see response.py) and an SQS or Step Functions caller
does not keep it at all, yet someone has to be able to find out, later, what happened to each URL.
Writing it is best effort: a report that cannot be written is logged and `report` is null; the
images already stored are not undone and the invocation does not fail for it.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from response import failed_entry, succeeded_entry
from transfer import Outcome, Target

log = logging.getLogger("url2s3")


def report_key(prefix: str, request_id: str, now: float | None = None) -> str:
    """`prefix` + UTC date path + time and request id: sorted by time when listed, never reused."""
    stamp = time.gmtime(now if now is not None else time.time())
    return f"{prefix}{time.strftime('%Y/%m/%d/%H%M%S', stamp)}-{request_id}.json"


def entry(o: Outcome, extra: dict) -> dict:
    """The report's entry for one item: the response's fields plus time, attempts, the item as given."""
    if o.status == "succeeded":
        base = succeeded_entry(o)
    elif o.status == "failed":
        base = failed_entry(o)
    else:
        base = {"url": o.item.url}
    return {**base, "item": o.item.given, "ms": o.ms, "attempts": o.attempts, **extra}


def document(source: str, target: Target, outcomes: list[Outcome], summary: dict,
             describe: Callable[[Outcome], dict]) -> dict:
    """The report: what ran where, the totals, and one entry per item in its list."""
    lists: dict[str, list] = {"succeeded": [], "failed": [], "remaining": []}
    for o in outcomes:
        lists[o.status].append(entry(o, describe(o)))
    return {"source": source, "bucket": target.bucket, "prefix": target.prefix, **summary, **lists}


def write(client: Any, bucket: str, key: str, body: dict) -> str | None:
    """Put the report; its key, or None (logged) when S3 refused it."""
    data = json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
    except (ClientError, BotoCoreError) as exc:
        log.error("could not write the report to s3://%s/%s: %s", bucket, key, str(exc)[:300])
        return None
    return key
