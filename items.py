"""Items as callers write them: a URL string, or {"url": ..., "key": ...}.

Shared by every event shape, so a URL means the same thing whether it came in a direct event, an
SQS message, a Step Functions batch or a manifest line.
"""
from __future__ import annotations

import json
from typing import Any

from transfer import Item, Outcome

ITEM_FIELDS = {"url", "key"}


def parse_item(index: int, given: Any, where: str, blank_key_is_none: bool = False) -> Item:
    """`given` as an Item; ValueError naming `where` when its shape is wrong.

    `blank_key_is_none` serves CSV manifests read by Step Functions, where a row with an empty
    `key` column still carries the field.
    """
    if isinstance(given, str):
        return Item(index, given, None, given)
    if not isinstance(given, dict):
        raise ValueError(f"{where} must be a URL string or an object with 'url', not {type(given).__name__}")
    unknown = sorted(set(given) - ITEM_FIELDS)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}; an item takes 'url' and optional 'key'")
    if not isinstance(given.get("url"), str):
        raise ValueError(f"{where}.url is required and must be a string")
    key = given.get("key")
    if blank_key_is_none and key == "":
        key = None
    if key is not None and not isinstance(key, str):
        raise ValueError(f"{where}.key must be a string")
    return Item(index, given["url"], key, given)


def parse_text(index: int, text: str, where: str) -> Item | None:
    """One line of text (a manifest line, an SQS body) as an Item; None for a blank line or a
    `#` comment. A line starting with `{` or `"` is JSON; anything else is the URL itself."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    given: Any = text
    if text[0] in '{"':
        try:
            given = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{where} is not valid JSON: {exc}") from None
    return parse_item(index, given, where)


def rejected(index: int, given: Any, error: str) -> Outcome:
    """A failed outcome for an item whose shape was wrong: it fails alone, before any I/O."""
    url = given.get("url") if isinstance(given, dict) else given
    if not isinstance(url, str):
        url = json.dumps(given, default=str)
    return Outcome(Item(index, url[:2000], None, given), "failed", error=error[:400], retryable=False)


def lenient_items(values: list, where: str, blank_key_is_none: bool = False) -> tuple[list[Item], list[Outcome]]:
    """Parse a list where one malformed entry must fail alone instead of rejecting the event."""
    items: list[Item] = []
    bad: list[Outcome] = []
    for index, given in enumerate(values):
        try:
            items.append(parse_item(index, given, f"{where}[{index}]", blank_key_is_none))
        except ValueError as exc:
            bad.append(rejected(index, given, str(exc)))
    return items, bad
