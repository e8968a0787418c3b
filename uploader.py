"""Putting one origin body into S3 within a memory budget.

Two paths, chosen per body:
- small (declared length below the part size, or an unknown length that turns out to be): the
  worker reads the body into memory and sends one PutObject itself. No transfer manager, no extra
  threads; most images take this path.
- large: one TransferManager shared by every transfer streams the body in parts (the machinery
  `upload_fileobj` uses, built once instead of once per call). Its in-memory chunk semaphore is
  shared too, and a slot count caps how many large bodies stream at once.

Both draw on a byte budget, so memory is bounded by the budget, not by image size or worker count.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from s3transfer.manager import TransferConfig as ManagerConfig
from s3transfer.manager import TransferManager

from body import OriginBody
from deadline import Deadline
from errors import BatchAborted, DeadlineExceeded, UploadError

log = logging.getLogger(__name__)


def _steady_malloc() -> None:
    """Ask glibc to give large buffers back to the OS when they are freed.

    By default glibc raises its mmap threshold after a multi-MB buffer is freed, and from then on
    serves such buffers from per-thread arenas that keep the memory: RSS then grows with the
    number of worker threads, not with the bytes actually held. A fixed 1 MiB threshold (which
    also turns that adjustment off) keeps part-sized buffers in mmap, returned on free. No-op
    where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


_steady_malloc()

MAX_PARTS = 10_000  # S3's limit on parts in one multipart upload
# One PutObject is cheaper than a multipart upload (one request instead of three or more), so
# bodies up to this size are sent whole even when the part size is smaller.
SINGLE_PUT_MAX = 8 * 1024 * 1024
# S3 answers that will be the same for every item of the batch: stop instead of failing them all.
BATCH_FATAL_CODES = {"NoSuchBucket", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId",
                     "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
                     "PermanentRedirect", "AuthorizationHeaderMalformed", "InvalidBucketName",
                     "AccountProblem", "InvalidRegion", "IllegalLocationConstraintException"}


@dataclass(frozen=True)
class MemoryPlan:
    part_size: int
    large_slots: int  # large bodies streaming at once
    small_bytes: int  # bytes of small bodies held at once
    part_concurrency: int = 1  # parts of one large body uploading at once
    single_put_max: int = 8 * 1024 * 1024  # bodies below this go up in one PutObject

    @classmethod
    def for_budget(cls, budget: int, part_size: int, workers: int, part_concurrency: int = 1) -> "MemoryPlan":
        """Split `budget` bytes between large streams and small bodies."""
        per_large = part_size * (1 + part_concurrency)  # one part being read, the rest uploading
        large = max(1, min(workers, budget // (2 * per_large)))
        single = max(part_size, SINGLE_PUT_MAX)
        small = max(single, budget - large * per_large)
        return cls(part_size, large, small, part_concurrency, single)

    def held_at_most(self) -> int:
        """Bytes of image data this plan can hold at once, every path full."""
        return self.large_slots * self.part_size * (1 + self.part_concurrency) + self.small_bytes


class Budget:
    """A counting semaphore over units (bytes, or slots) whose waits respect a deadline."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int, deadline: Deadline, cancelled: threading.Event,
             what: str = "memory") -> Iterator[None]:
        amount = min(amount, self.total)
        with self._cond:
            while self._free < amount:
                if cancelled.is_set() or deadline.expired():
                    raise DeadlineExceeded(f"deadline reached while waiting for {what}")
                self._cond.wait(timeout=min(0.1, max(0.001, deadline.remaining())))
            self._free -= amount
        try:
            yield
        finally:
            with self._cond:
                self._free += amount
                self._cond.notify_all()


class ManagerPool:
    """One TransferManager per large slot, each sized for a single stream.

    s3transfer's in-memory chunk semaphore belongs to a manager, so a manager shared by several
    streams lets one stream take every chunk: a single 1 GB body would then hold as much memory as
    all slots together. With one manager per slot, checked out for the length of one stream, each
    stream holds at most `part_concurrency` parts queued or uploading plus the one being read.
    Managers (and their threads) live as long as the container, so no item pays for building one.
    """

    def __init__(self, client: Any, plan: MemoryPlan) -> None:
        config = ManagerConfig(multipart_threshold=plan.part_size, multipart_chunksize=plan.part_size,
                               max_request_concurrency=plan.part_concurrency, max_submission_concurrency=1,
                               max_in_memory_upload_chunks=plan.part_concurrency)
        self._idle = [TransferManager(client, config) for _ in range(plan.large_slots)]
        self._slots = Budget(plan.large_slots)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def checkout(self, deadline: Deadline, cancelled: threading.Event) -> Iterator[TransferManager]:
        with self._slots.hold(1, deadline, cancelled, "a large-body slot"):
            with self._lock:
                manager = self._idle.pop()
            try:
                yield manager
            finally:
                with self._lock:
                    self._idle.append(manager)


_pools: dict[tuple[int, MemoryPlan], ManagerPool] = {}
_pools_lock = threading.Lock()


def manager_pool(client: Any, plan: MemoryPlan) -> ManagerPool:
    """The container-wide ManagerPool for this client and plan."""
    with _pools_lock:
        key = (id(client), plan)
        if key not in _pools:
            _pools[key] = ManagerPool(client, plan)
        return _pools[key]


@contextlib.contextmanager
def s3_errors(bucket: str, url: str) -> Iterator[None]:
    """Map botocore's exceptions to ours: per-item UploadError, or BatchAborted for the batch."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") in BATCH_FATAL_CODES:
            raise BatchAborted(f"S3 refused the upload to bucket {bucket!r}: {error.get('Code')}: "
                               f"{error.get('Message', '')}"[:400], url=url) from None
        raise UploadError(f"S3 upload failed: {exc}"[:400], url=url) from None
    except (NoCredentialsError, EndpointConnectionError) as exc:
        raise BatchAborted(f"S3 is not usable: {exc}"[:400], url=url) from None
    except BotoCoreError as exc:
        raise UploadError(f"S3 upload failed: {exc}"[:400], url=url) from None


class Uploader:
    def __init__(self, client: Any, plan: MemoryPlan, cancelled: threading.Event) -> None:
        self.client, self.plan, self.cancelled = client, plan, cancelled
        self._small = Budget(plan.small_bytes)

    def upload(self, body: OriginBody, bucket: str, key: str, extra: dict, deadline: Deadline,
               fetched: Callable[[], None]) -> None:
        """Send `body` to S3; `fetched()` as soon as the origin's part is over (small bodies)."""
        single, length = self.plan.single_put_max, body.content_length
        if length is not None and length < single:
            with self._small.hold(length, deadline, self.cancelled):
                data = body.read_buffer(length)
                fetched()
                return self._put(data, bucket, key, extra, body.url)
        with contextlib.ExitStack() as held:
            if length is None:  # read ahead: it may be small after all
                held.enter_context(self._small.hold(single, deadline, self.cancelled))
                head = body.read_buffer(single)
                if len(head) < single:
                    fetched()
                    return self._put(head, bucket, key, extra, body.url)
                body.unread(bytes(head))
                del head
            with manager_pool(self.client, self.plan).checkout(deadline, self.cancelled) as manager:
                held.close()  # the read-ahead now counts against the large slot
                self._stream(manager, body, bucket, key, extra)

    def _put(self, data: bytes | bytearray, bucket: str, key: str, extra: dict, url: str) -> None:
        with s3_errors(bucket, url):
            self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def _stream(self, manager: TransferManager, body: OriginBody, bucket: str, key: str,
                extra: dict) -> None:
        part, length = self.plan.part_size, body.content_length
        with s3_errors(bucket, body.url):
            if length is not None and length > part * MAX_PARTS:
                bigger = -(-length // MAX_PARTS)  # rare: its own manager with parts that fit
                with TransferManager(self.client, ManagerConfig(multipart_threshold=bigger,
                                     multipart_chunksize=bigger, max_request_concurrency=2,
                                     max_in_memory_upload_chunks=2)) as own:
                    own.upload(body, bucket, key, extra_args=extra).result()
                return
            manager.upload(body, bucket, key, extra_args=extra).result()
