"""What each engine needs back: a Job is one invocation's work, and it knows how to run its items,
what the continuation looks like and how to answer. The direct shape is the base class; the
Distributed Map and manifest shapes override what differs (sqs.py adds the SQS one).

Also the fields every event shape shares (bucket, prefix, hop), checked the same way everywhere.
"""
from __future__ import annotations

import re

from itertools import chain
from typing import Any

from config import Settings
from deadline import Deadline
from manifest import ManifestReader
from response import LAMBDA_BUDGET, STEP_FUNCTIONS_BUDGET, item_lists
from transfer import BatchResult, Item, Outcome, Target, TransferOptions, run_batch, run_list

MAX_PREFIX_BYTES = 512  # leaves room for the derived part within S3's 1024-byte key limit


class Job:
    """One invocation's work. The direct shape is the base; other shapes override what differs."""

    kind = "direct"
    budget = LAMBDA_BUDGET  # bytes the response may take
    self_continues = True  # a caller that drops the response can still have the job finished
    lists = True  # the response lists items and carries report and totals (SQS: only message ids)
    items_field = "urls"

    def __init__(self, event: dict, target: Target, items: list[Item], rejected: list[Outcome] | None = None,
                 hop: int = 0) -> None:
        self.event, self.target, self.items, self.hop = event, target, items, hop
        self.rejected = rejected or []

    def run(self, client: Any, options: TransferOptions, deadline: Deadline) -> BatchResult:
        return run_list(self.items, self.target, client, options, deadline)

    def outcomes(self, result: BatchResult) -> list[Outcome]:
        return [*self.rejected, *result.outcomes]

    def error(self, result: BatchResult) -> str | None:
        return result.error

    def continuation(self, remaining: list) -> dict | None:
        """The whole event to send next: this one with only the remaining items, or None."""
        return {**self.event, self.items_field: remaining} if remaining else None

    def progressed(self, totals: dict) -> bool:
        """Whether another call would see less work: some item was stored or failed for good."""
        return totals["succeeded"] + totals["failed"] > 0

    def respond(self, result: BatchResult, outcomes: list[Outcome]) -> dict:
        body: dict[str, Any] = item_lists(outcomes)
        body["continuation"] = self.continuation(body["remaining"])
        if self.error(result):
            body["error"] = self.error(result)
        return body

    def describe(self, outcome: Outcome) -> dict:
        """Extra report fields for one item (the SQS message id, for instance)."""
        return {}


class MapJob(Job):
    """A Distributed Map child batch; its result must fit in a Step Functions state (256 KiB)."""

    kind = "map"
    budget = STEP_FUNCTIONS_BUDGET
    self_continues = False  # the state machine's Choice loop continues it
    items_field = "Items"


class ManifestJob(Job):
    """Leftovers from the previous call first (`urls`), then manifest lines from `offset` on."""

    kind = "manifest"

    def __init__(self, event: dict, target: Target, items: list[Item], rejected: list[Outcome],
                 hop: int, manifest: dict) -> None:
        super().__init__(event, target, items, rejected, hop)
        self.manifest = manifest
        self.reader: ManifestReader | None = None

    def run(self, client: Any, options: TransferOptions, deadline: Deadline) -> BatchResult:
        m = self.manifest
        self.reader = ManifestReader(client, m["bucket"], m["key"], m.get("offset", 0), m.get("etag"))
        result = run_batch(chain(self.items, self.reader), self.target, client, options, deadline)
        result.outcomes += [Outcome(item, "remaining") for item in self.items[len(result.outcomes):]]
        return result

    def outcomes(self, result: BatchResult) -> list[Outcome]:
        return [*self.rejected, *self.reader.rejected, *result.outcomes]

    def error(self, result: BatchResult) -> str | None:
        return result.error or self.reader.error

    def continuation(self, remaining: list) -> dict | None:
        if self.reader.eof and not remaining:
            return None
        manifest = {**self.manifest, "offset": self.reader.offset}
        if self.reader.etag:
            manifest["etag"] = self.reader.etag
        event = {k: v for k, v in self.event.items() if k != "urls"}
        return {**event, "manifest": manifest, **({"urls": remaining} if remaining else {})}

    def progressed(self, totals: dict) -> bool:
        """Reading on is progress too: a stretch of comment lines finishes no item."""
        return super().progressed(totals) or self.reader.offset > self.reader.start

    def respond(self, result: BatchResult, outcomes: list[Outcome]) -> dict:
        body = super().respond(result, outcomes)
        body["manifest"] = {"offset": self.reader.offset, "size": self.reader.size, "done": self.reader.eof}
        return body


# Loose on purpose: S3-compatible stores and old us-east-1 buckets allow more than today's S3 rules;
# what it refuses ('/', spaces, ':') can never name a bucket and would fail every item otherwise.
BUCKET_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?")


def target_of(fields: dict, settings: Settings, where: str = "") -> Target:
    """bucket and prefix from the event (or BatchInput), falling back to BUCKET and PREFIX."""
    bucket = fields.get("bucket", settings.bucket)
    if not isinstance(bucket, str) or not bucket:
        raise ValueError(f"{where}bucket is required: give it in the event or set the BUCKET environment variable")
    if not BUCKET_NAME.fullmatch(bucket):
        raise ValueError(f"{where}bucket {bucket!r} is not a bucket name (letters, digits, '.', '-', '_')")
    prefix = fields.get("prefix", settings.prefix)
    try:
        size = len(prefix.encode("utf-8")) if isinstance(prefix, str) else None
    except UnicodeError:
        raise ValueError(f"{where}prefix is not valid text (unpaired surrogates)") from None
    if size is None or size > MAX_PREFIX_BYTES:
        raise ValueError(f"{where}prefix must be a string of at most {MAX_PREFIX_BYTES} bytes")
    return Target(bucket, prefix)


def hop_of(event: dict) -> int:
    hop = event.get("hop", 0)
    if not isinstance(hop, int) or isinstance(hop, bool) or hop < 0:
        raise ValueError("hop must be a whole number >= 0 (it counts self-invocations)")
    return hop
