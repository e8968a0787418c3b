#!/usr/bin/env python3
"""Drive url2s3 over a long list of URLs from your machine.

    python tools/drive.py --function-name url2s3 urls.txt [--bucket B] [--prefix P]
                          [--batch-size N] [--max-payload-bytes N] [--failed-out failed.json]
                          [--region R] [--profile P]

Reads URLs (one per line; blank lines and `#` comments skipped; a line may also be a JSON object
`{"url": ..., "key": ...}` or a JSON string), splits them into payloads well under Lambda's 6 MB
synchronous limit, invokes the function synchronously and re-invokes with each `continuation`
until it is null. Prints a progress line per invocation, then a summary and the failed URLs, and
writes them to a JSON file.

Exit status: 0 every URL stored; 1 some URLs failed; 2 the driver gave up or an error stopped it
(the URLs not finished are listed as "unfinished" in the JSON file).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Invoker = Callable[[dict], dict]
Printer = Callable[[str], None]

MAX_PAYLOAD_BYTES = 1_000_000  # Lambda takes 6 MB synchronously; the response must fit there too
MAX_ITEMS = 1000  # bounds the response: each item may come back with a key and an error message
MAX_STALLS = 3  # consecutive invocations that finish nothing before the driver gives up
RETRIES = 2  # extra attempts for an invocation that failed in a way worth retrying
INVOKE_READ_TIMEOUT = 910  # seconds; a synchronous invocation may run for up to 900 s
SHOWN = 50  # failed / unfinished URLs printed in the summary; the JSON file has them all
RETRYABLE_CODES = {"TooManyRequestsException", "ServiceException", "ResourceConflictException"}
EXIT_OK, EXIT_FAILED, EXIT_GAVE_UP = 0, 1, 2


class InvokeError(Exception):
    """An invocation that did not return a usable response."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class GaveUp(Exception):
    """The driver stopped re-invoking; the message says why."""


# reading and splitting ------------------------------------------------------------------------

def parse_line(line: str, where: str) -> Any | None:
    """One input line as an event item (a URL string or {"url", "key"}); None for blank/comment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text[0] not in '{"':
        return text
    try:
        item = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: not valid JSON: {exc}") from None
    if isinstance(item, str):
        return item
    if not isinstance(item, dict) or not isinstance(item.get("url"), str) \
            or set(item) - {"url", "key"} or not isinstance(item.get("key", ""), str):
        raise ValueError(f'{where}: expected a URL, or {{"url": "...", "key": "..."}}')
    return item


def read_items(path: Path) -> list[Any]:
    items = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            item = parse_line(line, f"{path}:{number}")
            if item is not None:
                items.append(item)
    return items


def encoded_size(value: Any) -> int:
    return len(json.dumps(value).encode("utf-8"))


def split_payloads(items: list[Any], base: dict, max_bytes: int = MAX_PAYLOAD_BYTES,
                   max_items: int = MAX_ITEMS) -> list[dict]:
    """Events of at most `max_items` items whose JSON encoding is at most `max_bytes` bytes."""
    overhead = encoded_size({**base, "urls": []})
    payloads: list[dict] = []
    batch: list[Any] = []
    size = overhead
    for item in items:
        item_size = encoded_size(item) + 2  # the ", " separator json.dumps writes between items
        if overhead + item_size > max_bytes:
            raise ValueError(f"one item alone is larger than {max_bytes} bytes: {str(item)[:80]}...")
        if batch and (size + item_size > max_bytes or len(batch) >= max_items):
            payloads.append({**base, "urls": batch})
            batch, size = [], overhead
        batch.append(item)
        size += item_size
    if batch:
        payloads.append({**base, "urls": batch})
    return payloads


# progress -------------------------------------------------------------------------------------

def human_bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def item_url(item: Any) -> str:
    return item if isinstance(item, str) else item["url"]


@dataclass
class Progress:
    total: int
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    bytes: int = 0
    invocations: int = 0
    failed: list[dict] = field(default_factory=list)
    unfinished: list[dict] = field(default_factory=list)

    def record(self, payload: dict, response: dict) -> None:
        """Count a response; each failure also keeps the item as given, to be sent again later."""
        given = {item_url(item): item for item in reversed(payload["urls"])}
        self.invocations += 1
        self.stored += len(response["succeeded"])
        self.bytes += sum(r.get("bytes") or 0 for r in response["succeeded"])
        self.failed.extend({**f, "item": given.get(f["url"], f["url"])} for f in response["failed"])

    def give_up_on(self, items: Iterable[Any], reason: str) -> None:
        self.unfinished.extend({"item": item, "url": item_url(item), "reason": reason} for item in items)

    @property
    def done(self) -> int:
        return self.stored + len(self.failed) + len(self.unfinished)

    def rates(self) -> tuple[float, float, float]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return elapsed, self.bytes / 1e6 / elapsed, self.stored / elapsed

    def line(self, label: str) -> str:
        elapsed, mb_s, images_s = self.rates()
        return (f"{label}: stored {self.stored}, failed {len(self.failed)}, "
                f"remaining {self.total - self.done} of {self.total} | {human_bytes(self.bytes)} "
                f"in {elapsed:.1f} s | {mb_s:.2f} MB/s, {images_s:.1f} images/s")


# the loop -------------------------------------------------------------------------------------

def check_response(payload: dict, response: Any) -> dict:
    """The response must account for every item of the payload exactly once."""
    if not isinstance(response, dict) or not all(
            isinstance(response.get(k), list) for k in ("succeeded", "failed", "remaining")):
        raise InvokeError(f"unexpected response from the function: {str(response)[:200]}", False)
    given = sorted(item_url(i) for i in payload["urls"])
    try:
        seen = sorted([r["url"] for r in response["succeeded"]] + [r["url"] for r in response["failed"]]
                      + [item_url(i) for i in response["remaining"]])
    except (KeyError, TypeError):
        raise InvokeError(f"malformed response from the function: {str(response)[:200]}", False) from None
    if given != seen:
        raise InvokeError("the response does not account for every URL of the payload", False)
    if bool(response["remaining"]) != isinstance(response.get("continuation"), dict):
        raise InvokeError("the response has remaining URLs but no continuation, or the reverse", False)
    return response


def invoke_with_retries(invoke: Invoker, payload: dict, say: Printer, retries: int = RETRIES,
                        pause: float = 1.0) -> dict:
    for attempt in range(retries + 1):
        try:
            return check_response(payload, invoke(payload))
        except InvokeError as exc:
            if not exc.retryable or attempt == retries:
                raise
            say(f"  invocation failed ({exc}); retry {attempt + 1}/{retries} in {pause * 2 ** attempt:.0f} s")
            time.sleep(pause * 2 ** attempt)
    raise AssertionError("unreachable")


def run_payload(invoke: Invoker, payload: dict, progress: Progress, say: Printer, label: str,
                max_stalls: int = MAX_STALLS, pause: float = 1.0) -> None:
    """Invoke with `payload` and each continuation until null. Raises GaveUp, with the items not
    finished recorded in `progress`, when it cannot go on."""
    stalls = 0
    while payload is not None:
        try:
            response = invoke_with_retries(invoke, payload, say, pause=pause)
        except InvokeError as exc:
            progress.give_up_on(payload["urls"], f"invocation failed: {exc}")
            raise GaveUp(f"invocation failed: {exc}") from None
        progress.record(payload, response)
        finished = len(response["succeeded"]) + len(response["failed"])
        stalls = 0 if finished else stalls + 1
        say(progress.line(f"{label} call {progress.invocations}"))
        if stalls >= max_stalls:
            reason = (f"{stalls} invocations in a row finished none of the {len(response['remaining'])} "
                      "remaining URLs (is the function's timeout too short for its SAFETY_MARGIN_MS, "
                      "or is every origin too slow?)")
            progress.give_up_on(response["remaining"], f"gave up: {reason}")
            raise GaveUp(reason)
        payload = response.get("continuation")


def drive(items: list[Any], base: dict, invoke: Invoker, say: Printer = print,
          max_bytes: int = MAX_PAYLOAD_BYTES, max_items: int = MAX_ITEMS,
          max_stalls: int = MAX_STALLS, pause: float = 1.0) -> Progress:
    """Run every item through the function; each ends up stored, failed or unfinished."""
    payloads = split_payloads(items, base, max_bytes, max_items)
    progress = Progress(total=len(items))
    say(f"{len(items)} URLs in {len(payloads)} payload(s)")
    for number, payload in enumerate(payloads, 1):
        try:
            run_payload(invoke, payload, progress, say, f"payload {number}/{len(payloads)}",
                        max_stalls, pause)
        except GaveUp as exc:
            say(f"stopping: {exc}")
            for later in payloads[number:]:
                progress.give_up_on(later["urls"], "not attempted: the driver stopped earlier")
            break
    return progress


# reporting ------------------------------------------------------------------------------------

def summarize(progress: Progress, say: Printer) -> int:
    elapsed, mb_s, images_s = progress.rates()
    say(f"summary: {progress.stored} stored ({human_bytes(progress.bytes)}), "
        f"{len(progress.failed)} failed, {len(progress.unfinished)} unfinished, of {progress.total} "
        f"in {elapsed:.1f} s and {progress.invocations} completed invocation(s); "
        f"{mb_s:.2f} MB/s, {images_s:.1f} images/s")
    for failure in progress.failed[:SHOWN]:
        tag = "retryable" if failure.get("retryable") else "permanent"
        say(f"  FAILED ({tag}) {failure['url']}: {failure['error']}")
    by_reason: dict[str, list[str]] = {}
    for entry in progress.unfinished:
        by_reason.setdefault(entry["reason"], []).append(entry["url"])
    for reason, urls in by_reason.items():
        say(f"  UNFINISHED ({len(urls)}): {reason}")
        for url in urls[:SHOWN]:
            say(f"    {url}")
    hidden = max(0, len(progress.failed) - SHOWN) + sum(max(0, len(u) - SHOWN) for u in by_reason.values())
    if hidden:
        say(f"  ... and {hidden} more in the JSON file")
    if progress.unfinished:
        return EXIT_GAVE_UP
    return EXIT_FAILED if progress.failed else EXIT_OK


def write_report(path: Path, progress: Progress) -> None:
    elapsed, _, _ = progress.rates()
    report = {"summary": {"total": progress.total, "stored": progress.stored, "bytes": progress.bytes,
                          "failed": len(progress.failed), "unfinished": len(progress.unfinished),
                          "invocations": progress.invocations, "seconds": round(elapsed, 3)},
              "failed": progress.failed, "unfinished": progress.unfinished}
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# the real invoker -----------------------------------------------------------------------------

def lambda_client(region: str | None = None, profile: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(read_timeout=INVOKE_READ_TIMEOUT, connect_timeout=10,
                    retries={"mode": "standard", "max_attempts": 3})
    return boto3.session.Session(profile_name=profile, region_name=region).client("lambda", config=config)


def function_error(payload: bytes, kind: str) -> InvokeError:
    """A FunctionError response: an invalid event (ValueError) will fail again; others may not."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = {"errorMessage": payload.decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {"errorMessage": str(body)}
    error_type = body.get("errorType") or "unknown"
    message = str(body.get("errorMessage") or "")[:300]
    return InvokeError(f"FunctionError {kind}: {error_type}: {message}", error_type != "ValueError")


def lambda_invoker(function_name: str, client: Any) -> Invoker:
    """Synchronous (RequestResponse) invocation of `function_name` through boto3."""
    from botocore.exceptions import BotoCoreError, ClientError

    def invoke(payload: dict) -> dict:
        try:
            response = client.invoke(FunctionName=function_name, InvocationType="RequestResponse",
                                     Payload=json.dumps(payload).encode("utf-8"))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise InvokeError(str(exc), code in RETRYABLE_CODES) from None
        except BotoCoreError as exc:
            raise InvokeError(str(exc), False) from None
        body = response["Payload"].read()
        if response.get("FunctionError"):
            raise function_error(body, response["FunctionError"])
        try:
            return json.loads(body)
        except ValueError:
            raise InvokeError(f"response is not JSON: {body[:200]!r}", False) from None

    return invoke


# command line ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run a list of image URLs through url2s3.")
    parser.add_argument("urls_file", type=Path, help="one URL per line (or JSON objects with url/key)")
    parser.add_argument("--function-name", required=True)
    parser.add_argument("--bucket", help="overrides the function's BUCKET")
    parser.add_argument("--prefix", help="overrides the function's PREFIX")
    parser.add_argument("--batch-size", type=int, default=MAX_ITEMS, help="max URLs per payload")
    parser.add_argument("--max-payload-bytes", type=int, default=MAX_PAYLOAD_BYTES)
    parser.add_argument("--max-stalls", type=int, default=MAX_STALLS,
                        help="give up after this many invocations in a row that finish nothing")
    parser.add_argument("--failed-out", type=Path, default=Path("failed-urls.json"))
    parser.add_argument("--region")
    parser.add_argument("--profile")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 100_000:
        parser.error("--batch-size must be between 1 and 100000")
    if not 1_000 <= args.max_payload_bytes <= 5_000_000:
        parser.error("--max-payload-bytes must be between 1000 and 5000000")
    if args.max_stalls < 1:
        parser.error("--max-stalls must be at least 1")
    return args


def main(argv: list[str] | None = None, invoke: Invoker | None = None, say: Printer = print) -> int:
    args = parse_args(argv)
    try:
        items = read_items(args.urls_file)
    except (OSError, ValueError) as exc:
        say(f"drive.py: error: {exc}")
        return EXIT_GAVE_UP
    base = {k: v for k, v in (("bucket", args.bucket), ("prefix", args.prefix)) if v is not None}
    if invoke is None:
        invoke = lambda_invoker(args.function_name, lambda_client(args.region, args.profile))
    try:
        progress = drive(items, base, invoke, say, args.max_payload_bytes, args.batch_size,
                         args.max_stalls)
    except ValueError as exc:
        say(f"drive.py: error: {exc}")
        return EXIT_GAVE_UP
    status = summarize(progress, say)
    write_report(args.failed_out, progress)
    say(f"failed and unfinished URLs written to {args.failed_out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
