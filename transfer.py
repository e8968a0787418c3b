"""The engine: stream each URL's body into S3 on a bounded worker pool.

No Lambda knowledge here: callers hand in items, a target, an S3 client and a deadline, and get one
`Outcome` per item back, in input order. `run_batch` is the one place that waits and cleans up:
when the deadline comes it cancels the origin sockets, which makes every in-flight body read raise,
which makes s3transfer abort its multipart upload, and then it returns whatever did not finish as
remaining.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from deadline import Deadline
from errors import (BatchAborted, DeadlineExceeded, HTTPStatusError, NotAnImage, TransferError,
                    UploadError)
from keys import check_explicit_key, derive_key, metadata_url
from connections import CancelScope, ConnectionPool
from origin import Origin, OriginOptions, normalize_url
from sniff import SNIFF_BYTES, choose_content_type
from uploader import MemoryPlan, Uploader

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True)
class Item:
    """One unit of work; `given` is the item exactly as the caller wrote it."""

    index: int
    url: str
    key: str | None = None
    given: Any = None


@dataclass(frozen=True)
class Target:
    bucket: str
    prefix: str = ""


@dataclass
class Outcome:
    item: Item
    status: str  # "succeeded" | "failed" | "remaining"
    key: str | None = None
    bytes: int = 0
    content_type: str | None = None
    error: str | None = None
    retryable: bool = False
    ms: int = 0
    attempts: int = 0


@dataclass
class BatchResult:
    outcomes: list[Outcome]  # one per item, in input order
    error: str | None = None  # set when a fault common to all items stopped the batch
    exhausted: bool = True  # False when items were left unpulled in the source


@dataclass(frozen=True)
class TransferOptions:
    workers: int = 16
    part_size: int = 5 * MiB
    memory_budget: int = 256 * MiB  # bytes of bodies held in memory at once, across all transfers
    part_concurrency: int = 1  # parts of one large transfer uploading at once
    min_start_seconds: float = 1.0  # an item is not started with less time than this left
    abort_grace_seconds: float = 1.0  # time allowed for cancelled transfers to clean up
    attempts: int = 3  # tries per URL for retryable origin failures
    backoff_base: float = 0.25  # seconds; doubled each retry, with full jitter
    backoff_cap: float = 5.0
    retry_after_cap: float = 10.0  # a longer Retry-After is not waited for
    origin: OriginOptions = field(default_factory=OriginOptions)


def object_key(item: Item, target: Target, url: str) -> str:
    if item.key is None:
        return derive_key(url, target.prefix)
    problem = check_explicit_key(item.key, target.prefix)
    if problem:
        raise TransferError(f"invalid key: {problem}", url=item.url)
    return target.prefix + item.key


def upload_one(item: Item, target: Target, origin: Origin, uploader: Uploader, deadline: Deadline,
               fetched: Callable[[], None] = lambda: None) -> Outcome:
    """Fetch one URL and stream it into S3. Raises a TransferError on any failure.
    `fetched` is called once the origin has nothing more to send for this item."""
    url = normalize_url(item.url)
    key = object_key(item, target, url)
    body = origin.open(url, deadline)
    try:
        content_type = choose_content_type(body.content_type, body.peek_head(SNIFF_BYTES))
        if content_type is None:
            raise NotAnImage(f"not an image (Content-Type {body.content_type or 'missing'!r})", url=item.url)
        extra = {"ContentType": content_type, "Metadata": {"source-url": metadata_url(url)},
                 "ChecksumAlgorithm": "CRC32"}
        uploader.upload(body, target.bucket, key, extra, deadline, fetched)
        return Outcome(item, "succeeded", key=key, bytes=body.bytes_read, content_type=content_type)
    finally:
        body.close()


def retry_delay(exc: TransferError, attempt: int, options: TransferOptions) -> float | None:
    """Seconds to wait before the next attempt, or None when this error must not be retried."""
    if not exc.retryable or isinstance(exc, (UploadError, BatchAborted, DeadlineExceeded)):
        return None  # S3 errors were already retried by botocore's retry mode
    if attempt >= options.attempts:
        return None
    retry_after = exc.retry_after if isinstance(exc, HTTPStatusError) else None
    if retry_after is not None:
        return retry_after if retry_after <= options.retry_after_cap else None
    return random.uniform(0, min(options.backoff_cap, options.backoff_base * 2 ** (attempt - 1)))


def with_retries(run: Callable[[], Outcome], options: TransferOptions, deadline: Deadline,
                 cancelled: threading.Event) -> Outcome:
    """Run `run` until it succeeds, fails for good, runs out of attempts, or would pass the deadline."""
    attempt = 1
    while True:
        try:
            outcome = run()
            outcome.attempts = attempt
            return outcome
        except TransferError as exc:
            exc.attempts = attempt
            delay = retry_delay(exc, attempt, options)
            if delay is None or delay > deadline.remaining() - options.min_start_seconds:
                raise
            log.info("retrying %s in %.2f s after: %s", exc.url, delay, exc)
            if cancelled.wait(delay):
                raise DeadlineExceeded("deadline reached while waiting to retry", url=exc.url) from None
            attempt += 1


def _settle(item: Item, started: float, run: Callable[[], Outcome], stop: "BatchStop") -> Outcome:
    """Run one item and turn whatever happens into an Outcome; nothing escapes a worker."""
    try:
        outcome = run()
    except (DeadlineExceeded, BatchAborted) as exc:
        if isinstance(exc, BatchAborted):
            stop.trip(str(exc))
        outcome = Outcome(item, "remaining")
    except TransferError as exc:
        outcome = Outcome(item, "failed", error=str(exc), retryable=exc.retryable,
                          attempts=getattr(exc, "attempts", 1))
    except Exception as exc:  # a bug must fail one item, not the batch
        log.exception("unexpected error on %s", item.url)
        outcome = Outcome(item, "failed", error=f"internal error: {type(exc).__name__}", retryable=False)
    outcome.ms = int((time.monotonic() - started) * 1000)
    return outcome


class BatchStop:
    """The first batch-wide fault, remembered; once tripped no further item starts."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.tripped = threading.Event()

    def trip(self, error: str) -> None:
        if not self.tripped.is_set():
            self.error = error
            log.error("stopping the batch: %s", error)
            self.tripped.set()


def run_batch(items: Iterable[Item], target: Target, client: Any, options: TransferOptions,
              deadline: Deadline) -> BatchResult:
    """Transfer items pulled lazily from `items`, at most `workers` at a time.

    Items are pulled only while there is time to start them, so a huge iterator (a manifest read
    from S3) costs memory for the items in flight only. `outcomes` has one entry per pulled item,
    in pull order; `exhausted` says whether the iterator was drained.
    """
    scope, stop, pool = CancelScope(), BatchStop(), ConnectionPool(per_host=options.workers)
    origin = Origin(options.origin, scope, pool)
    plan = MemoryPlan.for_budget(options.memory_budget, options.part_size, options.workers,
                                 options.part_concurrency)
    uploader = Uploader(client, plan, scope.cancelled)

    def may_start() -> bool:
        return deadline.remaining() >= options.min_start_seconds and not stop.tripped.is_set()

    def work(item: Item, slot: FetchSlot) -> Outcome:
        started = time.monotonic()
        try:
            if not may_start() or scope.cancelled.is_set():
                return Outcome(item, "remaining")
            run = lambda: upload_one(item, target, origin, uploader, deadline, slot.release)  # noqa: E731
            return _settle(item, started, lambda: with_retries(run, options, deadline, scope.cancelled), stop)
        finally:
            slot.release()

    # Twice as many threads as fetch slots: an item whose body is read gives its slot to the next
    # item, whose download then overlaps this one's upload to S3.
    workers = ThreadPoolExecutor(max_workers=2 * max(1, options.workers), thread_name_prefix="url2s3")
    pulled: list[tuple[Item, Future]] = []
    slots = threading.Semaphore(max(1, options.workers))
    try:
        exhausted = _feed(iter(items), workers, work, pulled, may_start, slots, deadline)
        _wait([f for _, f in pulled], deadline, scope, options.abort_grace_seconds)
    finally:
        workers.shutdown(wait=False, cancel_futures=True)
        pool.close_all()
    return BatchResult([_result(f, item) for item, f in pulled], stop.error, exhausted)


class FetchSlot:
    """One item's share of the WORKERS fetches allowed at once, given back exactly once: when
    its body has been read (the S3 upload may still be running) or when the item ends."""

    def __init__(self, slots: threading.Semaphore) -> None:
        self._slots, self._lock, self._held = slots, threading.Lock(), True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._slots.release()


def _feed(source: Iterator[Item], pool: ThreadPoolExecutor, work: Callable[[Item, FetchSlot], Outcome],
          pulled: list[tuple[Item, Future]], may_start: Callable[[], bool], slots: threading.Semaphore,
          deadline: Deadline) -> bool:
    """Start an item whenever a fetch slot is free, while items may start; True when `source`
    ran dry."""
    while may_start():
        if not slots.acquire(timeout=max(0.001, min(0.1, deadline.remaining()))):
            continue
        item = next(source, None)
        if item is None:
            slots.release()
            return True
        pulled.append((item, pool.submit(work, item, FetchSlot(slots))))
    return False


def run_list(items: list[Item], target: Target, client: Any, options: TransferOptions,
             deadline: Deadline) -> BatchResult:
    """`run_batch` over a list, with the items it never pulled returned as remaining."""
    result = run_batch(items, target, client, options, deadline)
    result.outcomes += [Outcome(item, "remaining") for item in items[len(result.outcomes):]]
    return result


def _wait(futures: list[Future], deadline: Deadline, scope: CancelScope, grace: float) -> None:
    """Wait until all are done or the deadline passes; then cancel sockets and allow `grace`."""
    _, pending = wait(futures, timeout=max(0.0, deadline.remaining()))
    if pending:
        log.info("deadline reached with %d items unfinished; cancelling", len(pending))
        scope.cancel()
        for future in pending:
            future.cancel()
        wait(pending, timeout=grace)


def _result(future: Future, item: Item) -> Outcome:
    if future.done() and not future.cancelled():
        return future.result()
    return Outcome(item, "remaining")
