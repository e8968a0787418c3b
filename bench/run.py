"""Benchmark for url2s3 (issue 5): the engine against simple alternatives, all on loopback.

    .venv/bin/python bench/run.py [--quick] [--workloads PATTERN ...] [--contenders NAME ...]

Pieces, each in its own process:
  * S3: moto's server (bench/s3_server.py), a fresh one for every contender+workload run;
  * the origin: bench/origin_server.py, an asyncio server with a latency model (TTFB on every
    response, connection set-up delay on the first request of each connection), listening on
    127.0.0.1..127.0.0.5 so the 5-host workload really talks to five hosts;
  * each contender run: bench/contender.py in a fresh interpreter, which measures itself.

Prints one table per workload plus the cold-start figures, and writes everything to
bench/results/<timestamp>.json. docs/bench.md explains the figures.
"""
from __future__ import annotations

import argparse
import ctypes
import fnmatch
import hashlib
import json
import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from corpus import ensure_corpus  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
CONTENDERS = ("url2s3", "sequential", "all-at-once", "pool", "rclone")
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
QUICK = ("small-1host", "small-5host", "large-10M-cl", "large-100M-chunked", "concurrent-8x10M-cl")
FULL = ("small-1host", "small-5host", "large-10M-cl", "large-10M-chunked", "large-100M-cl",
        "large-100M-chunked", "large-100M-close", "large-1G-cl", "large-1G-chunked",
        "concurrent-8x100M-cl")
UNITS = {"K": 1024, "M": MiB, "G": GiB}


# -- processes -------------------------------------------------------------------------------------------
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Run in each child before exec: SIGKILL it if the harness dies, so nothing is left behind."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(cmd: list[str], log: Path, env: dict | None = None, stdout=None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=stdout or open(log, "ab"),
                            stderr=open(log, "ab"), env=env, cwd=REPO, start_new_session=True,
                            preexec_fn=_die_with_parent)


def stop(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """End a child and its process group: close its stdin, SIGTERM, then SIGKILL."""
    if proc is None or proc.returncode is not None:
        return
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the group may outlive its leader (e.g. rclone under a killed wrapper)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_line(proc: subprocess.Popen, timeout: float, what: str, log: Path) -> str:
    """The first line a child prints, or a clear error with the tail of its log."""
    deadline, buf = time.monotonic() + timeout, b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            stop(proc)
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start (exit {proc.returncode}); log {log}:\n{tail}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                continue
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def clean_env(endpoint: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RCLONE_")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
           and k not in ("BUCKET", "PREFIX", "WORKERS", "MAX_BYTES", "ALLOWED_HOSTS", "ALLOW_PRIVATE_NETWORKS",
                         "CA_BUNDLE", "PART_SIZE_MB", "SAFETY_MARGIN_MS", "PYTHONPATH")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               NO_PROXY="*", PYTHONUNBUFFERED="1")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


# -- servers ---------------------------------------------------------------------------------------------
class S3Server:
    def __init__(self, logdir: Path) -> None:
        self.log = logdir / "s3.log"
        self.proc = spawn([sys.executable, str(BENCH / "s3_server.py")], self.log, env=clean_env(),
                          stdout=subprocess.PIPE)
        line = read_line(self.proc, 60, "moto S3 server", self.log)
        if not line.startswith("READY "):
            stop(self.proc)
            raise RuntimeError(f"moto S3 server said {line!r}")
        self.endpoint = line.split()[1]
        import boto3
        from botocore.config import Config
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing", config=Config(retries={"mode": "standard", "max_attempts": 5},
                                                           read_timeout=300))

    def contents(self, bucket: str) -> tuple[int, int, int]:
        count = total = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                count += 1
                total += obj["Size"]
        uploads = len(self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
        return count, total, uploads

    def purge(self, bucket: str) -> None:
        """Delete the bucket and all in it, so moto's memory and temp files do not pile up."""
        for upload in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                      for o in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if doomed:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        self.client.delete_bucket(Bucket=bucket)

    def close(self) -> None:
        stop(self.proc)


class OriginServer:
    def __init__(self, logdir: Path, images: Path, args: argparse.Namespace) -> None:
        self.log = logdir / "origin.log"
        cmd = [sys.executable, str(BENCH / "origin_server.py"), "--images", str(images),
               "--hosts", ",".join(HOSTS), "--ttfb", str(args.ttfb),
               "--connect-delay", str(args.connect_delay), "--bandwidth", str(args.bandwidth)]
        self.proc = spawn(cmd, self.log, env=clean_env(), stdout=subprocess.PIPE)
        info = json.loads(read_line(self.proc, 60, "origin server", self.log))
        self.listeners: list[str] = info["listeners"]
        self.pid = info["pid"]

    def stats(self, reset: bool = False) -> dict:
        url = f"http://{self.listeners[0]}/{'__reset' if reset else '__stats'}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)

    def close(self) -> None:
        stop(self.proc)


# -- workloads -------------------------------------------------------------------------------------------
@dataclass
class Workload:
    name: str
    kind: str  # small | large
    description: str
    urls: list[str] = field(default_factory=list)
    expected_bytes: int = 0
    largest: int = 0
    rclone: list[dict] = field(default_factory=list)
    rclone_parallel: bool = False

    @property
    def items(self) -> int:
        return len(self.urls)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG])", text)
    if not m:
        raise ValueError(f"bad size {text!r} (use e.g. 10M, 1G)")
    return int(m[1]) * UNITS[m[2]]


def build_workload(name: str, listeners: list[str], manifest: dict, small_count: int) -> Workload:
    m = re.fullmatch(r"small-(\d)host", name)
    if m:
        hosts = int(m[1])
        if not 1 <= hosts <= len(listeners):
            raise ValueError(f"{name}: between 1 and {len(listeners)} hosts")
        images = manifest["images"][:small_count]
        w = Workload(name, "small", f"{len(images)} images from {hosts} host{'s' if hosts > 1 else ''}")
        for k in range(hosts):
            w.rclone.append({"kind": "copy", "root": f"http://{listeners[k]}/",
                             "dir": f"sets/n{len(images)}-h{hosts}-k{k}"})
        for i, image in enumerate(images):
            k = i % hosts
            w.urls.append(f"http://{listeners[k]}/sets/n{len(images)}-h{hosts}-k{k}/{image['name']}")
            w.expected_bytes += image["bytes"]
            w.largest = max(w.largest, image["bytes"])
        return w
    m = re.fullmatch(r"(?:large-|concurrent-(\d+)x)(\d+[KMG])-(cl|chunked|close)", name)
    if m:
        count, size, mode = int(m[1] or 1), parse_size(m[2]), m[3]
        framing = {"cl": "with Content-Length", "chunked": "chunked, no Content-Length",
                   "close": "close-delimited, no Content-Length"}[mode]
        what = f"{count} x {m[2]}B at once" if m[1] else f"one {m[2]}B body"
        w = Workload(name, "large", f"{what}, {framing}", expected_bytes=count * size, largest=size)
        directory = f"big/{mode}-{size}-n{count}"
        w.urls = [f"http://{listeners[0]}/{directory}/{i}.jpg" for i in range(count)]
        if count == 1:
            w.rclone = [{"kind": "copyurl", "root": f"http://{listeners[0]}/", "url": w.urls[0],
                         "key": f"{directory}/0.jpg"}]
        else:
            w.rclone = [{"kind": "copy", "root": f"http://{listeners[0]}/", "dir": directory}]
        return w
    raise ValueError(f"unknown workload {name!r}: use small-<N>host, large-<size>-<cl|chunked|close> "
                     "or concurrent-<N>x<size>-<cl|chunked|close>")


def select_workloads(patterns: list[str] | None, quick: bool) -> list[str]:
    base = QUICK if quick else FULL
    if not patterns:
        return list(base)
    chosen: list[str] = []
    for pattern in patterns:
        matches = [n for n in dict.fromkeys(FULL + QUICK) if fnmatch.fnmatch(n, pattern)]
        for name in matches or [pattern]:  # a literal name outside the catalogue is built from its name
            if name not in chosen:
                chosen.append(name)
    return chosen


# -- one run ---------------------------------------------------------------------------------------------
def run_one(contender: str, w: Workload, origin: OriginServer, s3: S3Server, args, logdir: Path,
            rclone_path: str | None) -> dict:
    row: dict = {"workload": w.name, "contender": contender, "items": w.items,
                 "expected_bytes": w.expected_bytes}
    if contender == "rclone" and not rclone_path:
        return {**row, "status": "skipped", "note": "rclone is not on PATH"}
    if contender == "all-at-once":
        estimate = 2.2 * w.expected_bytes + 200 * MiB
        if estimate > args.mem_cap_gib * GiB:
            return {**row, "status": "skipped",
                    "note": f"would need ~{estimate / GiB:.1f} GiB > cap {args.mem_cap_gib} GiB"}
    if contender == "sequential" and 2.2 * w.largest > args.mem_cap_gib * GiB:
        return {**row, "status": "skipped", "note": "largest body over the memory cap"}

    tag = f"{w.name}.{contender}"
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    s3.client.create_bucket(Bucket=bucket)
    if contender == "rclone":
        # moto answers CompleteMultipartUpload on an unversioned bucket with x-amz-version-id: null
        # (real S3 sends none); rclone then HEADs ?versionId=null and moto refuses it. A versioned
        # bucket gives rclone a real version id.
        s3.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        spec = {"contender": contender, "urls": w.urls, "bucket": bucket, "endpoint": s3.endpoint,
                "images_dir": str(BENCH / ".cache" / "images"),
                "workers": args.workers, "repo": str(REPO), "rclone": w.rclone,
                "rclone_parallel": w.rclone_parallel, "lambda_seconds": 900}
        spec_path, out_path = logdir / f"{tag}.spec.json", logdir / f"{tag}.out.json"
        spec_path.write_text(json.dumps(spec))
        env = clean_env(s3.endpoint)
        if contender == "url2s3":
            env.update(BUCKET=bucket, ALLOW_PRIVATE_NETWORKS="true", WORKERS=str(args.workers),
                       MAX_BYTES=str(2 * GiB), SAFETY_MARGIN_MS="2000", LOG_LEVEL="WARNING")
            if args.lambda_memory_mb:  # what Lambda sets; the engine may size its memory budget from it
                env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(args.lambda_memory_mb)
        timeout = args.timeout_scale * (90 + w.expected_bytes / (3 * MiB)
                                         + w.items * (0.3 if contender == "sequential" else 0.03))
        if contender == "url2s3":  # the engine on disk may change between runs (others work on it)
            row["engine"] = hashlib.sha256(json.dumps(engine_hashes(), sort_keys=True)
                                           .encode()).hexdigest()[:10]
        origin.stats(reset=True)  # counters from zero for this run
        o_cpu0, s_cpu0, m0, me0 = proc_cpu(origin.pid), proc_cpu(s3.proc.pid), machine_busy(), self_cpu()
        started = time.monotonic()
        log = logdir / f"{tag}.log"
        proc = spawn([sys.executable, str(BENCH / "contender.py"), str(spec_path), str(out_path)], log, env=env)
        status, note, observed_kb, child_cpu = "ok", "", 0, 0.0
        while True:
            pid, wstatus, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(wstatus)
                child_cpu = ru.ru_utime + ru.ru_stime
                break
            rss = proc_kb(proc.pid, "VmRSS")
            observed_kb = max(observed_kb, rss)
            if rss > args.mem_cap_gib * GiB / 1024:
                status, note = "killed", f"RSS passed the {args.mem_cap_gib} GiB cap"
            elif time.monotonic() - started > timeout:
                status, note = "timeout", f"no result after {timeout:.0f} s"
            if status != "ok":
                stop(proc, grace=2)
                break
            time.sleep(0.1)
        outer = time.monotonic() - started
        o_cpu, s_cpu = proc_cpu(origin.pid) - o_cpu0, proc_cpu(s3.proc.pid) - s_cpu0
        machine = machine_busy() - m0
        after = origin.stats()
        result = json.loads(out_path.read_text()) if out_path.exists() and status == "ok" else {}
        if status == "ok" and not result.get("ok"):
            status = "error"
            note = result.get("error") or f"contender exited {proc.returncode} without a result; see {log}"
        elif status == "ok" and result.get("failed"):
            status = "failed"
            note = f"{result['failed']} item(s) failed; see {log}"
        time.sleep(0.05)  # let moto's access log catch up with the last response
        row.update(s3_requests(s3.log, bucket))
        objects, stored, uploads = s3.contents(bucket)
    finally:
        try:
            s3.purge(bucket)
        except Exception as exc:  # noqa: BLE001 - a failed clean-up must not hide the result
            print(f"  (could not empty {bucket}: {exc})", flush=True)
    row.update(status=status, note=note, outer_wall_s=outer,
               origin_requests=after["requests"], origin_head_requests=after["head_requests"],
               origin_connections=after["connections"],
               origin_max_open_connections=after["max_open_connections"],
               origin_bytes_sent=after["bytes_sent"], origin_not_found=after["not_found"],
               origin_cpu_s=o_cpu, s3_cpu_s=s_cpu, contender_total_cpu_s=child_cpu,
               machine_busy_cpu_s=machine, machine_busy_pct=machine / max(1e-9, outer * (os.cpu_count() or 1)) * 100,
               other_cpu_s=max(0.0, machine - child_cpu - o_cpu - s_cpu - (self_cpu() - me0)),
               observed_peak_rss_kb=observed_kb, objects=objects, stored_bytes=stored, open_uploads=uploads,
               log=str(log))
    for key in ("wall_s", "cpu_s", "idle_rss_kb", "peak_rss_kb", "growth_kb", "succeeded", "failed", "errors",
                "invocations", "import_s", "threads", "threads_left", "rclone_processes", "traceback"):
        if key in result:
            row[key] = result[key]
    if "wall_s" in row:
        row["rate"] = (w.items if w.kind == "small" else stored / MiB) / row["wall_s"]
        row["cpu_per_unit"] = (row["cpu_s"] * 1000 / max(1, objects) if w.kind == "small"
                               else row["cpu_s"] / max(1e-9, stored / GiB))
    problems = []
    if objects != w.items:
        problems.append(f"{objects}/{w.items} objects")
    if stored != w.expected_bytes:
        problems.append(f"{stored}/{w.expected_bytes} bytes")
    if uploads:
        problems.append(f"{uploads} open multipart uploads")
    row["check"] = "ok" if not problems else "; ".join(problems)
    if status == "ok" and problems:
        row["status"] = "mismatch"
    return row


def s3_requests(log: Path, bucket: str) -> dict:
    """Object-level requests moto logged for `bucket`: what the contender asked of S3."""
    counts = {"s3_requests": 0, "s3_put_object": 0, "s3_parts": 0}
    line_re = re.compile(r'"(\w+) /' + re.escape(bucket) + r'/([^ ?]+)(\?[^ ]*)? HTTP')
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return counts
    for m in line_re.finditer(text):
        counts["s3_requests"] += 1
        query = m[3] or ""
        if "partNumber=" in query:
            counts["s3_parts"] += 1
        elif m[1] == "PUT" and not query:
            counts["s3_put_object"] += 1
    return counts


# -- cold start ------------------------------------------------------------------------------------------
def cold_start(runs: int) -> dict:
    """Median wall time of fresh interpreters; the three commands take turns so that load from
    elsewhere on the machine falls on all of them alike."""
    env = clean_env()
    commands = {"python -c pass": "pass", "import boto3": "import boto3", "import handler": "import handler"}
    times: dict[str, list[float]] = {label: [] for label in commands}
    errors: dict[str, str] = {}
    for i in range(runs + 1):
        for label, code in commands.items():
            if label in errors:
                continue
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                                  timeout=120)
            elapsed = time.perf_counter() - t
            if done.returncode != 0:
                errors[label] = done.stderr.decode(errors="replace")[-500:]
            elif i:  # the first round warms the page cache and writes .pyc files
                times[label].append(elapsed)
    return {label: {"error": errors[label]} if label in errors else
            {"median_ms": statistics.median(times[label]) * 1000, "runs_ms": [t * 1000 for t in times[label]]}
            for label in commands}


# -- report ----------------------------------------------------------------------------------------------
def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(w: Workload, rows: list[dict], args) -> str:
    small = w.kind == "small"
    unit = "img/s" if small else "MiB/s"
    cpu_unit = "cpu ms/img" if small else "cpu s/GiB"
    head = ["contender", "status", "wall s", unit, "cpu s", cpu_unit, "peak MB", "growth MB", "req", "conn",
            "open", "s3 req", "origin c", "s3 c", "other c", "box %", "check", "thr x", "cpu x", "growth x"]
    ref = next((r for r in rows if r["contender"] == "url2s3" and "rate" in r), None)
    lines = []
    for r in rows:
        have = "rate" in r
        wall = r.get("outer_wall_s") or 0

        def ratio(key: str, r=r) -> str:
            if not (have and ref) or not ref.get(key) or r["contender"] == "s3-only":
                return "-"
            return f"{r[key] / ref[key]:.2f}"

        def cores(key: str, r=r, wall=wall) -> str:
            return f"{r[key] / wall:.2f}" if wall and key in r else "-"

        lines.append([
            r["contender"], r["status"], fmt(r.get("wall_s"), ".2f"), fmt(r.get("rate"), ".1f"),
            fmt(r.get("cpu_s"), ".2f"), fmt(r.get("cpu_per_unit"), ".1f" if small else ".2f"),
            fmt(r["peak_rss_kb"] / 1024 if "peak_rss_kb" in r else None, ".0f"),
            fmt(r["growth_kb"] / 1024 if "growth_kb" in r else None, ".0f"),
            fmt(r.get("origin_requests"), "d"), fmt(r.get("origin_connections"), "d"),
            fmt(r.get("origin_max_open_connections"), "d"), fmt(r.get("s3_requests"), "d"),
            cores("origin_cpu_s"), cores("s3_cpu_s"), cores("other_cpu_s"),
            fmt(r.get("machine_busy_pct"), ".0f"),
            r.get("check", "-") if r["status"] != "skipped" else "-",
            ratio("rate"), ratio("cpu_per_unit"), ratio("growth_kb"),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    out = [f"== {w.name}: {w.description} ({w.expected_bytes / MiB:.1f} MiB), {args.workers} workers =="]
    out.append("  ".join(h.ljust(n) if i < 2 else h.rjust(n) for i, (h, n) in enumerate(zip(head, widths))))
    for line in lines:
        out.append("  ".join(str(x).ljust(n) if i < 2 else str(x).rjust(n)
                             for i, (x, n) in enumerate(zip(line, widths))))
    for r in rows:
        if r.get("note"):
            out.append(f"  note {r['contender']}: {r['note']}")
        if r.get("errors"):
            out.append(f"  errors {r['contender']}: {r['errors'][0]}")
        if r.get("invocations", 1) > 1:
            out.append(f"  note {r['contender']}: needed {r['invocations']} handler invocations")
        if r.get("threads_left"):
            out.append(f"  note {r['contender']}: {r['threads_left']} more threads alive after the run than before")
    if small and w.name == "small-1host" and ref:
        ceiling = args.workers / args.ttfb
        no_reuse = args.workers / (args.ttfb + args.connect_delay)
        out.append(f"  origin ceiling at {args.workers} workers with connection reuse: {ceiling:.0f} req/s "
                   f"({args.workers} / {args.ttfb * 1000:.0f} ms TTFB); without reuse {no_reuse:.0f} req/s. "
                   f"url2s3: {ref['rate']:.1f} img/s = {ref['rate'] / ceiling * 100:.0f}% of the ceiling, "
                   f"{ref['origin_connections']} connections for {ref['origin_requests']} requests")
        cal = next((r for r in rows if r["contender"] == "s3-only" and "rate" in r), None)
        if cal:
            out.append(f"  s3-only (calibration, no origin): moto absorbed {cal['rate']:.0f} PUT/s of these bodies "
                       f"at {args.workers} workers on this machine; a contender near that rate is held back by the "
                       "S3 emulator, not by the origin model")
    return "\n".join(out)


def engine_hashes() -> dict:
    """Short hashes of the runtime code (every top-level *.py of the repository)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in sorted(REPO.glob("*.py"))}


def engine_fingerprint() -> dict:
    info: dict = {"files": engine_hashes()}
    try:
        info["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                          text=True, timeout=10).stdout.strip()
        info["modified"] = subprocess.run(["git", "status", "--porcelain", "--", "*.py", ":!bench", ":!tests"],
                                          cwd=REPO,
                                          capture_output=True, text=True, timeout=10).stdout.split("\n")
        info["modified"] = [x for x in info["modified"] if x]
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description="url2s3 benchmark (see docs/bench.md)")
    parser.add_argument("--quick", action="store_true", help="reduced set for development (~3 min)")
    parser.add_argument("--workloads", nargs="+", metavar="PATTERN",
                        help=f"names or glob patterns; catalogue: {', '.join(FULL)}; any "
                             "large-<size>-<mode> / concurrent-<N>x<size>-<mode> also works")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--small", type=int, help="images in the small workloads (default 500, quick 200)")
    parser.add_argument("--workers", type=int, default=16, help="worker count for url2s3 and pool (16)")
    parser.add_argument("--ttfb", type=float, default=0.040, help="origin delay before each response, s")
    parser.add_argument("--connect-delay", type=float, default=0.080,
                        help="extra origin delay on a connection's first request, s")
    parser.add_argument("--bandwidth", type=float, default=0.0, help="per-connection cap, bytes/s (0 = none)")
    parser.add_argument("--lambda-memory-mb", type=int, default=0,
                        help="set AWS_LAMBDA_FUNCTION_MEMORY_SIZE for url2s3 (default: unset, as outside Lambda)")
    parser.add_argument("--mem-cap-gib", type=float, default=8.0, help="skip or kill a contender above this")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every run's timeout")
    parser.add_argument("--cold-runs", type=int, default=9, help="runs per cold-start figure (median)")
    parser.add_argument("--no-calibration", action="store_true",
                        help="skip the s3-only row (PUTs of in-memory bodies) on the small workloads")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/<timestamp>.json)")
    args = parser.parse_args()

    t_start = time.monotonic()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_path = args.out or BENCH / "results" / f"{stamp}{'-quick' if args.quick else ''}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix=f"url2s3-bench-{stamp}-"))
    small_count = args.small or (200 if args.quick else 500)
    names = select_workloads(args.workloads, args.quick)
    rclone_path = shutil.which("rclone")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    print(f"url2s3 bench: {'quick' if args.quick else 'full'}; workloads {', '.join(names)}; "
          f"contenders {', '.join(args.contenders)}; logs in {logdir}", flush=True)
    if "rclone" in args.contenders and not rclone_path:
        print("  rclone is not on PATH: its rows will be skipped", flush=True)
    report: dict = {
        "started_utc": stamp, "mode": "quick" if args.quick else "full", "workloads": names,
        "settings": {"workers": args.workers, "ttfb_s": args.ttfb, "connect_delay_s": args.connect_delay,
                     "bandwidth_Bps": args.bandwidth, "small_images": small_count, "mem_cap_gib": args.mem_cap_gib,
                     "lambda_memory_mb": args.lambda_memory_mb or None},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_start": os.getloadavg(),
                    "rclone": rclone_path and subprocess.run(["rclone", "version"], capture_output=True,
                                                            text=True).stdout.split("\n")[0]},
        "engine": engine_fingerprint(), "runs": [], "cold_start": {},
    }
    origin = s3 = None
    tables: list[str] = []
    exit_code = 0
    try:
        t = time.monotonic()
        manifest = ensure_corpus(BENCH / ".cache" / "images", max(small_count, 500),
                                 say=lambda m: print(m, flush=True))
        report["corpus_s"] = time.monotonic() - t
        print("cold start (median of %d fresh interpreters) ..." % args.cold_runs, flush=True)
        report["cold_start"] = cold_start(args.cold_runs)
        origin = OriginServer(logdir, BENCH / ".cache" / "images", args)
        report["origin_listeners"] = origin.listeners
        workloads = [build_workload(n, origin.listeners, manifest, small_count) for n in names]
        total = len(workloads) * len(args.contenders)
        done = 0
        for w in workloads:
            rows = []
            s3 = S3Server(logdir)  # a fresh moto per workload; a fresh bucket per run
            for contender in args.contenders:
                done += 1
                try:
                    if s3.proc.poll() is not None:
                        s3 = S3Server(logdir)
                    row = run_one(contender, w, origin, s3, args, logdir, rclone_path)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # a broken run must not stop the others
                    row = {"workload": w.name, "contender": contender, "status": "error",
                           "note": f"harness: {type(exc).__name__}: {exc}"[:500]}
                rows.append(row)
                report["runs"].append(row)
                if row["status"] not in ("ok", "skipped"):
                    exit_code = 1
                print(f"[{done}/{total}] {w.name:<22} {contender:<12} {row['status']:<8} "
                      + (f"{row['wall_s']:7.2f} s  {row['rate']:8.1f} {'img/s' if w.kind == 'small' else 'MiB/s'}"
                         f"  cpu {row['cpu_s']:6.2f} s  peak {row['peak_rss_kb'] / 1024:6.0f} MB"
                         f"  req {row['origin_requests']} conn {row['origin_connections']}  {row['check']}"
                         if "rate" in row else row.get("note", "")), flush=True)
            if w.kind == "small" and not args.no_calibration:
                done_cal = run_one("s3-only", w, origin, s3, args, logdir, rclone_path)
                rows.append(done_cal)
                report["runs"].append(done_cal)
                if "rate" in done_cal:
                    print(f"      {w.name:<22} s3-only      {done_cal['status']:<8} {done_cal['wall_s']:7.2f} s  "
                          f"{done_cal['rate']:8.1f} PUT/s (calibration: moto alone)", flush=True)
            s3.close()
            tables.append(table(w, rows, args))
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); cleaning up", flush=True)
        exit_code = 130
    finally:
        if s3:
            s3.close()
        if origin:
            try:
                report["origin_final"] = origin.stats()
            except OSError:
                pass
            origin.close()
    report["duration_s"] = time.monotonic() - t_start
    report["machine"]["loadavg_end"] = os.getloadavg()
    cs = report["cold_start"]
    cold = [f"cold start: median wall time of {args.cold_runs} fresh `python -c ...` runs each, taken in turns:"] + [
        f"  {label:<16} {v['median_ms']:7.0f} ms" if "median_ms" in v else f"  {label:<16} failed: {v['error']}"
        for label, v in cs.items()]
    engines = sorted({r["engine"] for r in report["runs"] if r.get("engine")})
    if len(engines) > 1:
        cold.append(f"warning: the engine files changed during this run ({len(engines)} versions: "
                    f"{', '.join(engines)}); each url2s3 row records the one it ran")
    text = "\n\n".join(tables + ["\n".join(cold)])
    report["table"] = text
    out_path.write_text(json.dumps(report, indent=1, default=str))
    print("\n" + text)
    print(f"\nengine: HEAD {report['engine'].get('git_head')}, modified: {report['engine'].get('modified') or 'none'}")
    print(f"total {report['duration_s']:.0f} s; JSON {out_path}; logs {logdir}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
