"""Event shapes: which engine sent the event, and the Job (jobs.py, sqs.py) that serves it.

One handler serves every engine, so the per-item work is the same everywhere; what differs is
where the items come from and what the caller needs back:

- direct invoke  `{"urls": [...], "bucket", "prefix"}`: the documented response + continuation;
- SQS            `{"Records": [...]}` from aws:sqs: `batchItemFailures` (see sqs.py);
- Distributed Map `{"Items": [...], "BatchInput": {...}}`: the response, continuation in the same
                 shape so the state machine's loop can send it back;
- S3 manifest    `{"manifest": {"bucket", "key", "offset"}, ...}`: lines read lazily (manifest.py).

Every shape is checked before any I/O; a wrong event raises ValueError naming the field.
"""
from __future__ import annotations

from typing import Any

import sqs
from config import Settings
from items import lenient_items, parse_item
from jobs import Job, ManifestJob, MapJob, hop_of, target_of

DIRECT_FIELDS = {"urls", "bucket", "prefix", "hop"}
MAP_FIELDS = {"Items", "BatchInput"}
BATCH_INPUT_FIELDS = {"bucket", "prefix"}
MANIFEST_EVENT_FIELDS = {"manifest", "bucket", "prefix", "urls", "hop"}
MANIFEST_FIELDS = {"bucket", "key", "offset", "etag"}
SHAPES = ("urls is required and must be a list of URL strings or {'url', 'key'} objects (direct "
          "invoke); other accepted events: {'manifest': {'bucket', 'key'}} (S3 manifest), "
          "{'Items': [...], 'BatchInput': {...}} (Step Functions Distributed Map batch), "
          "{'Records': [...]} from aws:sqs (SQS event source mapping)")


def parse(event: Any, settings: Settings) -> Job:
    """The job for `event`, by its shape; ValueError naming what was expected otherwise."""
    if not isinstance(event, dict):
        raise ValueError(f"event must be a JSON object, not {type(event).__name__}")
    if "Records" in event:
        return sqs.parse(event, settings)
    if "Items" in event:
        return _map_job(event, settings)
    if "manifest" in event:
        return _manifest_job(event, settings)
    if "urls" in event or not event:
        return _direct_job(event, settings)
    raise ValueError(f"event shape not recognised (fields {sorted(event)[:10]}): {SHAPES}")


def _check_fields(fields: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"{where}has unknown field(s) {unknown}; expected {sorted(allowed)}")


def _direct_job(event: dict, settings: Settings) -> Job:
    _check_fields(event, DIRECT_FIELDS, "event ")
    urls = event.get("urls")
    if not isinstance(urls, list):
        raise ValueError(SHAPES)
    target = target_of(event, settings)
    hop = hop_of(event)
    return Job(event, target, [parse_item(i, given, f"urls[{i}]") for i, given in enumerate(urls)], hop=hop)


def _map_job(event: dict, settings: Settings) -> Job:
    _check_fields(event, MAP_FIELDS, "event ")
    if not isinstance(event["Items"], list):
        raise ValueError("Items must be a list (the batch a Distributed Map ItemBatcher sends)")
    batch_input = event.get("BatchInput", {})
    if not isinstance(batch_input, dict):
        raise ValueError("BatchInput must be an object with 'bucket' and optional 'prefix'")
    _check_fields(batch_input, BATCH_INPUT_FIELDS, "BatchInput ")
    target = target_of(batch_input, settings, "BatchInput.")
    items, bad = lenient_items(event["Items"], "Items", blank_key_is_none=True)
    return MapJob(event, target, items, bad)


def _manifest_fields(manifest: Any) -> dict:
    if not isinstance(manifest, dict):
        raise ValueError("manifest must be an object with 'bucket', 'key' and optional 'offset'")
    _check_fields(manifest, MANIFEST_FIELDS, "manifest ")
    for name in ("bucket", "key"):
        if not isinstance(manifest.get(name), str) or not manifest[name]:
            raise ValueError(f"manifest.{name} is required and must be a non-empty string")
    offset = manifest.get("offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError("manifest.offset must be a whole number of bytes >= 0")
    if not isinstance(manifest.get("etag", ""), str):
        raise ValueError("manifest.etag must be a string")
    return manifest


def _manifest_job(event: dict, settings: Settings) -> ManifestJob:
    _check_fields(event, MANIFEST_EVENT_FIELDS, "event ")
    manifest = _manifest_fields(event["manifest"])
    leftovers = event.get("urls", [])
    if not isinstance(leftovers, list):
        raise ValueError("urls must be a list (in a manifest event: the items left by the previous call)")
    target = target_of(event, settings)
    items, bad = lenient_items(leftovers, "urls")
    return ManifestJob(event, target, items, bad, hop_of(event), manifest)
