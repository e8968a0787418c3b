"""Per-item entries, totals, and a response that stays under the caller's payload limit.

Lambda refuses a synchronous response over 6 MB, and Step Functions a state result over 256 KiB.
A batch of 20,000 URLs can produce more than that in per-item detail, so past a bound the detail
is left out of the response (it is in the report and in the per-item log lines) and `omitted`
says how many entries of each list are missing. The continuation is never cut: it is what makes
the job finish, and it is never larger than the event that came in.
"""
from __future__ import annotations

import json
from typing import Any

from transfer import Outcome

LAMBDA_BUDGET = 5_000_000  # bytes of JSON; Lambda's limit is 6 MB
STEP_FUNCTIONS_BUDGET = 200_000  # bytes; Step Functions' limit for a state's result is 256 KiB
MAX_SUCCEEDED_DETAIL = 1000  # succeeded entries listed at most when a report holds them all
TRIM_ORDER = ("succeeded", "remaining", "failed")  # least needed first: remaining is in continuation


def succeeded_entry(o: Outcome) -> dict:
    return {"url": o.item.url, "key": o.key, "bytes": o.bytes, "content_type": o.content_type}


def failed_entry(o: Outcome) -> dict:
    return {"url": o.item.url, "error": o.error, "retryable": o.retryable}


def item_lists(outcomes: list[Outcome]) -> dict[str, list]:
    """succeeded / failed / remaining as the direct contract defines them."""
    lists: dict[str, list] = {"succeeded": [], "failed": [], "remaining": []}
    for o in outcomes:
        if o.status == "succeeded":
            lists["succeeded"].append(succeeded_entry(o))
        elif o.status == "failed":
            lists["failed"].append(failed_entry(o))
        else:
            lists["remaining"].append(o.item.given)
    return lists


def totals(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"succeeded": 0, "failed": 0, "remaining": 0, "bytes": 0}
    for o in outcomes:
        counts[o.status] += 1
        counts["bytes"] += o.bytes if o.status == "succeeded" else 0
    return counts


def json_size(value: Any) -> int:
    """Bytes of `value` as JSON; ASCII-escaped, so never less than its UTF-8 size."""
    return len(json.dumps(value))


def bounded(body: dict, budget: int) -> dict:
    """`body` with its per-item lists cut (from the end) until its JSON fits in `budget` bytes."""
    omitted: dict[str, int] = {}
    if body.get("report") and len(body.get("succeeded", [])) > MAX_SUCCEEDED_DETAIL:
        omitted["succeeded"] = len(body["succeeded"]) - MAX_SUCCEEDED_DETAIL
        body["succeeded"] = body["succeeded"][:MAX_SUCCEEDED_DETAIL]
    for name in TRIM_ORDER:
        excess = _size(body, omitted) - budget
        if excess <= 0:
            break
        while excess > 0 and body.get(name):
            kept = _kept(body[name], excess)
            omitted[name] = omitted.get(name, 0) + len(body[name]) - kept
            body[name] = body[name][:kept]
            excess = _size(body, omitted) - budget
    if omitted:
        body["omitted"] = omitted
    return body


def _size(body: dict, omitted: dict) -> int:
    return json_size({**body, "omitted": omitted} if omitted else body)


def _kept(entries: list, excess: int) -> int:
    """How many entries to keep so that dropping the rest saves at least `excess` bytes."""
    saved, kept = 0, len(entries)
    while kept and saved < excess:
        kept -= 1
        saved += json_size(entries[kept]) + 2  # ", " between entries
    return kept
