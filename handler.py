"""Lambda entry point: recognise the event's shape, run the batch against the invocation's
deadline, then report (S3 report, per-item log lines, EMF metrics) and answer in the shape the
caller needs, continuing the job itself when asked to.

It raises only for an invalid event (ValueError naming the field) or invalid configuration; every
per-URL problem is returned in `failed` (or, for SQS, acknowledged or listed for redelivery).
"""
from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, TypeVar

import boto3
from botocore.config import Config

import metrics
import report
import selfinvoke
import sources
from config import Settings, load_settings
from deadline import Deadline
from jobs import Job
from response import bounded, totals as count
from scaling import Scaling, load_scaling
from transfer import BatchResult, Outcome

T = TypeVar("T")

log = logging.getLogger(__name__)
_after_batch = ThreadPoolExecutor(max_workers=2, thread_name_prefix="url2s3-finish")
SPARE_SECONDS = 0.6  # what every invocation keeps after its last S3 or Lambda call


def _within(context: Any, what: str, call: Callable[[], T]) -> T | None:
    """`call()`, unless it would run into the end of the invocation: then None (logged).

    The report write and the self-invocation happen after the batch, inside the safety margin;
    botocore's timeouts and retries could take longer than the margin, so they are waited for
    only as long as the invocation has left."""
    future = _after_batch.submit(call)
    try:
        return future.result(timeout=max(0.0, context.get_remaining_time_in_millis() / 1000 - SPARE_SECONDS))
    except FutureTimeout:
        log.error("%s did not finish before the end of the invocation; going on without it", what)
        return None


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


def _function_name(context: Any) -> str:
    return os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or getattr(context, "function_name", None) or "url2s3"


def _write_report(job: Job, outcomes: list[Outcome], body: dict, scale: Scaling,
                  settings: Settings, context: Any, summary: dict) -> str | None:
    """The full per-item result in S3, or None when reports are off or the write failed."""
    if not scale.reports:
        return None
    request_id = getattr(context, "aws_request_id", None) or "local"
    key = report.report_key(scale.report_prefix, request_id)
    extra = {k: body[k] for k in ("continuation", "error", "batchItemFailures", "manifest") if k in body}
    document = report.document(job.kind, job.target, outcomes, {**summary, **extra}, job.describe)
    bucket = scale.report_bucket or job.target.bucket
    return _within(context, "the report write",
                   lambda: report.write(client_for(settings), bucket, key, document))


def _finish(job: Job, result: BatchResult, scale: Scaling, settings: Settings, context: Any,
            started: float) -> dict:
    """Logs, report, metrics and self-continuation around the response the job's shape defines."""
    outcomes = job.outcomes(result)
    totals = count(outcomes)
    metrics.log_items(job.kind, outcomes)
    body = job.respond(result, outcomes)
    summary = {"request_id": getattr(context, "aws_request_id", None), "hop": job.hop, "totals": totals}
    key = _write_report(job, outcomes, body, scale, settings, context, summary)
    if job.lists:
        body.update(report=key, totals=totals)
    if scale.self_continue and job.self_continues and body.get("continuation") is not None:
        body["self_continue"] = _within(context, "the self-invocation", lambda: selfinvoke.continue_chain(
            body["continuation"], job.hop, scale.max_hops, job.progressed(totals), context)) \
            or "unknown: the invoke did not answer in time"
    duration_ms = int((time.monotonic() - started) * 1000)
    if scale.metrics_namespace:
        metrics.emit(metrics.emf_document(scale.metrics_namespace, _function_name(context), totals,
                                          duration_ms, job.kind))
    metrics.log_summary({"source": job.kind, **summary, "duration_ms": duration_ms, "report": key,
                         "error": body.get("error"), "self_continue": body.get("self_continue")})
    return bounded(body, job.budget) if job.lists else body


def handler(event: Any, context: Any) -> dict:
    """Lambda's entry point, for every event shape (see sources.py)."""
    started = time.monotonic()
    settings, scale = load_settings(), load_scaling()
    log.setLevel(settings.log_level)
    metrics.log.setLevel(settings.log_level)
    job = sources.parse(event, settings)
    remaining_s = context.get_remaining_time_in_millis() / 1000
    deadline = Deadline.after(remaining_s - settings.safety_margin)
    log.info("%s batch of %d items, %.1f s left, bucket %s", job.kind, len(job.items), remaining_s,
             job.target.bucket)
    result = job.run(client_for(settings), settings.transfer, deadline)
    return _finish(job, result, scale, settings, context, started)
