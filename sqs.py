"""SQS event source mapping with ReportBatchItemFailures: one URL per message.

The answer is the partial batch response: the ids of the messages SQS must deliver again, which
are those not finished before the deadline and those that failed in a way that may succeed later.
A permanent failure (404, not an image, a body that is not a URL) is acknowledged: SQS deletes
it instead of redelivering it until it reaches a dead-letter queue, which would gain nothing. It
is in the report and the log instead.

FIFO queues: SQS keeps a message group in order only if, once one message of a group is listed,
every later message of that group in the batch is listed too; they were transferred in parallel,
so some of those may be stored twice, which is harmless (same key, same bytes).
"""
from __future__ import annotations

from typing import Any

from config import Settings
from items import parse_text, rejected
from jobs import Job, target_of
from transfer import BatchResult, Item, Outcome, Target

EVENT_SOURCE = "aws:sqs"


class SqsJob(Job):
    """One SQS batch; an item's index is its record's position, which maps it back to its message."""

    kind = "sqs"
    self_continues = False  # SQS redelivers what is listed; nothing to continue
    lists = False

    def __init__(self, event: dict, target: Target, items: list[Item], bad: list[Outcome]) -> None:
        super().__init__(event, target, items, bad)
        self.records: list[dict] = event["Records"]

    def retry_ids(self, outcomes: list[Outcome]) -> list[str]:
        """Message ids to redeliver, in record order, keeping FIFO groups in order."""
        again = {o.item.index for o in outcomes if o.status == "remaining" or (o.status == "failed" and o.retryable)}
        ids: list[str] = []
        stopped_groups: set[str] = set()
        for index, record in enumerate(self.records):
            group = (record.get("attributes") or {}).get("MessageGroupId")
            if index in again or (group is not None and group in stopped_groups):
                ids.append(record["messageId"])
                if group is not None:
                    stopped_groups.add(group)
        return ids

    def respond(self, result: BatchResult, outcomes: list[Outcome]) -> dict:
        """Exactly the partial batch response: other fields could confuse the event source mapping."""
        return {"batchItemFailures": [{"itemIdentifier": i} for i in self.retry_ids(outcomes)]}

    def describe(self, outcome: Outcome) -> dict:
        return {"message_id": self.records[outcome.item.index]["messageId"]}


def _record_item(index: int, record: Any) -> tuple[Item | None, Outcome | None]:
    """The message's item, or a failed outcome when its body holds none (it fails alone)."""
    if not isinstance(record, dict) or record.get("eventSource") != EVENT_SOURCE:
        source = record.get("eventSource") if isinstance(record, dict) else None
        raise ValueError(f"Records[{index}] is not an SQS message (eventSource {source!r}); "
                         f"this function takes Records only from {EVENT_SOURCE}")
    message_id = record.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise ValueError(f"Records[{index}].messageId is required")
    body = record.get("body")
    where = f"message {message_id} body"
    try:
        item = parse_text(index, body, where) if isinstance(body, str) else None
        if item is None:
            raise ValueError(f"{where} holds no URL (expected a URL or JSON {{\"url\", \"key\"}})")
        return item, None
    except ValueError as exc:
        return None, rejected(index, body if isinstance(body, str) else repr(body), str(exc))


def parse(event: dict, settings: Settings) -> SqsJob:
    records = event["Records"]
    if not isinstance(records, list):
        raise ValueError("Records must be a list of SQS messages")
    items: list[Item] = []
    bad: list[Outcome] = []
    for index, record in enumerate(records):
        item, failure = _record_item(index, record)
        if item is not None:
            items.append(item)
        else:
            bad.append(failure)
    try:
        target = target_of({}, settings)
    except ValueError as exc:
        raise ValueError(f"{exc} (an SQS message carries only the URL and key)") from None
    return SqsJob(event, target, items, bad)
