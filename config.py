"""Settings from environment variables, checked once, with errors that name the variable."""
from __future__ import annotations

import ipaddress
import os
import ssl
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
    s3_retry_mode: str = "standard"
    log_level: str = "INFO"


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


def _whole(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _number(env, name, default, low, high)
    if value != int(value):
        raise ValueError(f"environment variable {name}={env.get(name)!r} must be a whole number")
    return int(value)


def _ca_bundle(env: Mapping[str, str]) -> str | None:
    """CA_BUNDLE must be a readable PEM file: fail the configuration, not every item."""
    path = env.get("CA_BUNDLE", "").strip()
    if not path:
        return None
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"environment variable CA_BUNDLE={path!r} is not a readable PEM file: {exc}") from None
    return path


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in TRUE_WORDS | FALSE_WORDS:
        raise ValueError(f"environment variable {name}={raw!r} must be true or false")
    return raw in TRUE_WORDS


def _private_networks(env: Mapping[str, str]) -> tuple[bool, tuple]:
    """ALLOW_PRIVATE_NETWORKS: true/false, or a comma list of networks to allow (10.1.0.0/16)."""
    raw = env.get("ALLOW_PRIVATE_NETWORKS", "").strip()
    if raw.lower() in TRUE_WORDS | FALSE_WORDS:
        return raw.lower() in TRUE_WORDS, ()
    try:
        return False, tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"environment variable ALLOW_PRIVATE_NETWORKS={raw!r} must be true, false "
                         "or a comma-separated list of networks such as 10.0.0.0/8") from None


def _hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("ALLOWED_HOSTS", "")
    return tuple(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())


BASELINE_MB = 70  # RSS of the runtime with boto3 and a client loaded, measured with bench/


def memory_budget(env: Mapping[str, str]) -> int:
    """Bytes of image data held at once: MEMORY_BUDGET_MB, else 3/4 of the function's memory
    above the baseline (AWS_LAMBDA_FUNCTION_MEMORY_SIZE), else 256 MiB when not in Lambda."""
    explicit = _number(env, "MEMORY_BUDGET_MB", 0, 0, 10240)
    if explicit:
        return int(explicit * MiB)
    function_mb = _number(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 0, 0, 10240)
    if function_mb:
        return int(max(24, (function_mb - BASELINE_MB) * 0.75) * MiB)
    return 256 * MiB


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    allow_private, private_networks = _private_networks(env)
    origin = OriginOptions(
        connect_timeout=_number(env, "CONNECT_TIMEOUT", 5.0, 0.1, 60),
        read_timeout=_number(env, "READ_TIMEOUT", 10.0, 0.1, 300),
        max_redirects=_whole(env, "MAX_REDIRECTS", 5, 0, 20),
        max_bytes=_whole(env, "MAX_BYTES", 512 * MiB, 0, 5 * 1024**4),
        allow_private=allow_private,
        private_networks=private_networks,
        allowed_hosts=_hosts(env),
        ca_bundle=_ca_bundle(env),
    )
    margin = _number(env, "SAFETY_MARGIN_MS", 2000, 0, 600_000) / 1000
    transfer = TransferOptions(
        abort_grace_seconds=min(1.0, margin / 2),  # the other half stays for the response
        workers=_whole(env, "WORKERS", 16, 1, 256),
        part_size=int(_number(env, "PART_SIZE_MB", 5, 5, 5 * 1024) * MiB),
        attempts=_whole(env, "ORIGIN_ATTEMPTS", 3, 1, 10),
        part_concurrency=_whole(env, "PART_CONCURRENCY", 1, 1, 16),
        memory_budget=memory_budget(env),
        retry_after_cap=_number(env, "RETRY_AFTER_MAX", 10, 0, 900),
        origin=origin,
    )
    retry_mode = env.get("S3_RETRY_MODE", "standard").strip().lower()
    if retry_mode not in ("standard", "adaptive"):
        raise ValueError(f"environment variable S3_RETRY_MODE={retry_mode!r} must be standard or adaptive")
    log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"environment variable LOG_LEVEL={log_level!r} must be DEBUG, INFO, WARNING or ERROR")
    return Settings(bucket=env.get("BUCKET", ""), prefix=env.get("PREFIX", ""), s3_retry_mode=retry_mode,
                    log_level=log_level,
                    safety_margin=margin,
                    transfer=transfer)
