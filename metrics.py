"""Structured log lines (one per item, one summary) and CloudWatch metrics in Embedded Metric
Format, with nothing but the standard library.

Log lines go through `logging` as a `JsonMessage`, a dict whose str() is its JSON. Lambda's Python
runtime, with the JSON log format, puts a dict message into its own JSON record as an object (no
JSON inside a string); with the text format it prints str(message), which is then the JSON. So
the same call gives one parseable line either way.

EMF documents are printed straight to stdout: CloudWatch Logs extracts metrics from a log event
only when the whole event is the EMF JSON, which a logging prefix ("[INFO] ...") would break.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from transfer import Outcome

log = logging.getLogger("url2s3")

METRICS = (("Succeeded", "Count"), ("Failed", "Count"), ("Remaining", "Count"), ("Bytes", "Bytes"),
           ("Duration", "Milliseconds"))


class JsonMessage(dict):
    """A log message that is a dict to JSON formatters and JSON text to plain ones."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False, default=str)


def item_line(source: str, o: Outcome) -> JsonMessage:
    return JsonMessage(event="item", source=source, url=o.item.url, key=o.key, outcome=o.status,
                       bytes=o.bytes, ms=o.ms, attempts=o.attempts, error=o.error,
                       retryable=o.retryable if o.status == "failed" else None)


def log_items(source: str, outcomes: list[Outcome]) -> None:
    """One INFO line per item; LOG_LEVEL=WARNING silences them (the report still has them)."""
    if log.isEnabledFor(logging.INFO):
        for o in outcomes:
            log.info(item_line(source, o))


def log_summary(fields: dict[str, Any]) -> None:
    log.info(JsonMessage(event="summary", **fields))


def emf_document(namespace: str, function_name: str, totals: dict, duration_ms: int,
                 source: str, now_ms: int | None = None) -> dict:
    """One EMF document: the _aws directive, then every metric and dimension as a top-level key."""
    values = {"Succeeded": totals["succeeded"], "Failed": totals["failed"],
              "Remaining": totals["remaining"], "Bytes": totals["bytes"], "Duration": duration_ms}
    directive = {"Namespace": namespace, "Dimensions": [["FunctionName"]],
                 "Metrics": [{"Name": name, "Unit": unit} for name, unit in METRICS]}
    return {"_aws": {"Timestamp": now_ms if now_ms is not None else int(time.time() * 1000),
                     "CloudWatchMetrics": [directive]},
            "FunctionName": function_name, "Source": source, **values}


def emit(document: dict) -> None:
    """Print one EMF document as one line on stdout."""
    sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()
