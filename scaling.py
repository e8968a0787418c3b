"""Settings of the scale-out features (reports, metrics, self-continuation), from environment
variables, checked on every invocation with errors that name the variable.

They live apart from config.py because they concern what happens around a batch, not how one URL
is transferred; the checks reuse config's helpers so both read the same way.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from config import _flag, _whole

MAX_REPORT_PREFIX_BYTES = 512


@dataclass(frozen=True)
class Scaling:
    report_prefix: str  # empty: no reports are written
    report_bucket: str  # empty: the batch's own target bucket
    metrics_namespace: str  # empty: no EMF metric lines
    self_continue: bool
    max_hops: int  # self-invocations allowed after the first call of a chain

    @property
    def reports(self) -> bool:
        return bool(self.report_prefix)


def _report_prefix(env: Mapping[str, str]) -> str:
    prefix = env.get("REPORT_PREFIX", "").strip()
    if prefix.startswith("/") or len(prefix.encode("utf-8")) > MAX_REPORT_PREFIX_BYTES:
        raise ValueError(f"environment variable REPORT_PREFIX={prefix!r} must not start with '/' "
                         f"and must be at most {MAX_REPORT_PREFIX_BYTES} bytes")
    return prefix


def _namespace(env: Mapping[str, str]) -> str:
    namespace = env.get("METRICS_NAMESPACE", "url2s3").strip()
    if len(namespace) > 255 or namespace.startswith(":") or "::" in namespace:
        raise ValueError(f"environment variable METRICS_NAMESPACE={namespace!r} is not a valid "
                         "CloudWatch namespace (at most 255 characters)")
    return namespace


def load_scaling(env: Mapping[str, str] | None = None) -> Scaling:
    """Read and check the variables; a value out of range raises ValueError naming it."""
    env = os.environ if env is None else env
    return Scaling(report_prefix=_report_prefix(env), report_bucket=env.get("REPORT_BUCKET", "").strip(),
                   metrics_namespace=_namespace(env), self_continue=_flag(env, "SELF_CONTINUE"),
                   max_hops=_whole(env, "MAX_HOPS", 50, 0, 10_000))
