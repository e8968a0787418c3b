"""Settings from environment variables, checked once, with errors that name the variable."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from origin import OriginOptions
from transfer import MiB, TransferOptions

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    bucket: str
    prefix: str
    safety_margin: float  # seconds kept back from the invocation's remaining time
    transfer: TransferOptions


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"environment variable {name}={raw!r} must be between {low:g} and {high:g}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in TRUE_WORDS | FALSE_WORDS:
        raise ValueError(f"environment variable {name}={raw!r} must be true or false")
    return raw in TRUE_WORDS


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    origin = OriginOptions(
        connect_timeout=_number(env, "CONNECT_TIMEOUT", 5.0, 0.1, 60),
        read_timeout=_number(env, "READ_TIMEOUT", 10.0, 0.1, 300),
        max_redirects=int(_number(env, "MAX_REDIRECTS", 5, 0, 20)),
        max_bytes=int(_number(env, "MAX_BYTES", 512 * MiB, 0, 5 * 1024**4)),
        allow_private=_flag(env, "ALLOW_PRIVATE_NETWORKS"),
        ca_bundle=env.get("CA_BUNDLE") or None,
    )
    transfer = TransferOptions(
        workers=int(_number(env, "WORKERS", 16, 1, 256)),
        part_size=int(_number(env, "PART_SIZE_MB", 8, 5, 5 * 1024) * MiB),
        origin=origin,
    )
    return Settings(bucket=env.get("BUCKET", ""), prefix=env.get("PREFIX", ""),
                    safety_margin=_number(env, "SAFETY_MARGIN_MS", 2000, 0, 600_000) / 1000,
                    transfer=transfer)
