"""One contender on one workload, in a fresh process: `python bench/contender.py SPEC.json OUT.json`.

The harness (bench/run.py) writes SPEC and reads OUT. This process imports what its contender
needs, records its idle RSS and CPU, runs, then records peak RSS (VmHWM), CPU used and wall time.
Everything it measures is about this process alone: S3 (moto) and the origin live elsewhere.

SPEC fields: contender, urls, bucket, endpoint, workers, repo (url2s3), lambda_seconds (url2s3),
images_dir (s3-only), rclone and rclone_parallel (rclone).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
import traceback


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def key_for(url: str) -> str:
    from urllib.parse import urlsplit
    return urlsplit(url).path.lstrip("/")


def s3_client(endpoint: str, pool: int):
    import boto3
    from botocore.config import Config
    config = Config(max_pool_connections=pool, connect_timeout=5, read_timeout=120,
                    retries={"mode": "standard", "max_attempts": 5})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config,
                                          region_name="us-east-1")


# -- contenders --------------------------------------------------------------------------------------
# Each returns (succeeded, failed, errors, extra) where errors is a short sample of messages.

def fetch(url: str) -> tuple[bytes, str]:
    import urllib.request
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read(), response.headers.get("Content-Type", "application/octet-stream")


def run_sequential(spec: dict):
    client = s3_client(spec["endpoint"], 10)
    ok, errors = 0, []
    for url in spec["urls"]:
        try:
            data, ctype = fetch(url)
            client.put_object(Bucket=spec["bucket"], Key=key_for(url), Body=data, ContentType=ctype)
            del data
            ok += 1
        except Exception as exc:  # count it and go on, as a simple script would
            errors.append(f"{url}: {type(exc).__name__}: {exc}"[:300])
    return ok, len(errors), errors[:5], {}


def run_pool(spec: dict):
    from concurrent.futures import ThreadPoolExecutor
    client = s3_client(spec["endpoint"], max(10, spec["workers"]))

    def one(url: str) -> None:
        data, ctype = fetch(url)
        client.put_object(Bucket=spec["bucket"], Key=key_for(url), Body=data, ContentType=ctype)

    ok, errors = 0, []
    with ThreadPoolExecutor(max_workers=spec["workers"]) as pool:
        futures = [pool.submit(one, url) for url in spec["urls"]]
        for url, future in zip(spec["urls"], futures):
            try:
                future.result()
                ok += 1
            except Exception as exc:
                errors.append(f"{url}: {type(exc).__name__}: {exc}"[:300])
    return ok, len(errors), errors[:5], {}


def run_all_at_once(spec: dict):
    """Like Promise.all over axios: fetch every body at once, then upload every body at once."""
    urls = spec["urls"]
    client = s3_client(spec["endpoint"], max(10, len(urls)))
    bodies: list = [None] * len(urls)
    errors: list[str] = []
    lock = threading.Lock()

    def download(i: int) -> None:
        try:
            bodies[i] = fetch(urls[i])
        except Exception as exc:
            with lock:
                errors.append(f"{urls[i]}: {type(exc).__name__}: {exc}"[:300])

    def upload(i: int) -> None:
        try:
            data, ctype = bodies[i]
            client.put_object(Bucket=spec["bucket"], Key=key_for(urls[i]), Body=data, ContentType=ctype)
        except Exception as exc:
            with lock:
                errors.append(f"{urls[i]}: {type(exc).__name__}: {exc}"[:300])

    for phase, indexes in ((download, range(len(urls))), (upload, None)):
        if indexes is None:  # upload only what arrived
            indexes = [i for i in range(len(urls)) if bodies[i] is not None]
        threads = [threading.Thread(target=phase, args=(i,), daemon=True) for i in indexes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    failed = len(errors)
    return len(urls) - failed, failed, errors[:5], {"threads": len(urls)}


def load_bodies(spec: dict) -> list[tuple[str, bytes, str]]:
    """For the s3-only calibration: the same objects, read from the corpus before timing starts."""
    from pathlib import Path
    types = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
    out = []
    for url in spec["urls"]:
        name = url.rsplit("/", 1)[1]
        out.append((key_for(url), (Path(spec["images_dir"]) / name).read_bytes(),
                    types.get(os.path.splitext(name)[1], "application/octet-stream")))
    return out


def run_s3_only(spec: dict, bodies: list[tuple[str, bytes, str]]):
    """Calibration, not a contender: PUT bodies already in memory, `workers` at a time, so the
    table can show how many PUTs per second the S3 emulator absorbs on this machine."""
    from concurrent.futures import ThreadPoolExecutor
    client = s3_client(spec["endpoint"], max(10, spec["workers"]))

    def one(job: tuple[str, bytes, str]) -> None:
        client.put_object(Bucket=spec["bucket"], Key=job[0], Body=job[1], ContentType=job[2])

    ok, errors = 0, []
    with ThreadPoolExecutor(max_workers=spec["workers"]) as pool:
        for job, future in zip(bodies, [pool.submit(one, b) for b in bodies]):
            try:
                future.result()
                ok += 1
            except Exception as exc:
                errors.append(f"{job[0]}: {type(exc).__name__}: {exc}"[:300])
    return ok, len(errors), errors[:5], {}


class _Context:
    """What handler.handler uses from Lambda's context object, with a long deadline."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds
        self.function_name = "url2s3-bench"
        self.aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def run_url2s3(spec: dict, handler_module):
    event = {"urls": list(spec["urls"])}
    ok, failed, errors, invocations = 0, 0, [], 0
    stalled = 0
    while event is not None:
        invocations += 1
        response = handler_module.handler(event, _Context(spec.get("lambda_seconds", 900)))
        ok += len(response["succeeded"])
        failed += len(response["failed"])
        errors.extend(f"{r['url']}: {r['error']}"[:300] for r in response["failed"][:5])
        nxt = response.get("continuation")
        if nxt is not None and len(nxt.get("urls", [])) >= len(event["urls"]):
            stalled += 1
            if stalled >= 3:
                errors.append(f"no progress in 3 invocations; {len(nxt['urls'])} left")
                failed += len(nxt["urls"])
                break
        event = nxt
    return ok, failed, errors[:5], {"invocations": invocations}


def run_rclone(spec: dict):
    """rclone in child processes; its CPU and peak RSS come from wait4's rusage."""
    import subprocess
    import tempfile
    env = dict(os.environ)
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    conf.close()
    env["RCLONE_CONFIG"] = conf.name
    env.update({"RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
                "RCLONE_CONFIG_S3_ENDPOINT": spec["endpoint"], "RCLONE_CONFIG_S3_REGION": "us-east-1",
                "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "testing", "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "testing",
                "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true"})
    common = ["--s3-no-check-bucket", "--retries", "1", "--low-level-retries", "3", "-q",
              "--stats", "0",
              # rclone 1.60 HEADs a streamed upload with ?versionId=null, which moto answers 400
              "--s3-no-head"]
    commands = []
    for i, job in enumerate(spec["rclone"]):
        remote = f"O{i}"
        env[f"RCLONE_CONFIG_{remote}_TYPE"] = "http"
        env[f"RCLONE_CONFIG_{remote}_URL"] = job["root"]
        if job["kind"] == "copyurl":
            commands.append(["rclone", "copyurl", job["url"], f"S3:{spec['bucket']}/{job['key']}"] + common)
        else:
            commands.append(["rclone", "copy", f"{remote}:{job['dir']}", f"S3:{spec['bucket']}/{job['dir']}",
                             "--transfers", str(spec["workers"]), "--checkers", str(spec["workers"])] + common)
    groups = [commands] if spec.get("rclone_parallel") else [[c] for c in commands]
    cpu, peak_kb, errors = 0.0, 0, []
    for group in groups:
        procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for c in group]
        group_peak = 0
        for p in procs:
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            out = p.stdout.read().decode(errors="replace")
            cpu += ru.ru_utime + ru.ru_stime
            group_peak += ru.ru_maxrss
            if p.returncode != 0 or out.strip():
                errors.append(f"rclone exit {p.returncode}: {out.strip()[-300:]}")
        peak_kb = max(peak_kb, group_peak)
    os.unlink(conf.name)
    failed = sum(1 for e in errors if e.startswith("rclone exit") and not e.startswith("rclone exit 0"))
    return None, failed, errors[:5], {"rclone_cpu_s": cpu, "rclone_peak_kb": peak_kb,
                                      "rclone_processes": len(commands)}


def rclone_idle_kb() -> int:
    """Resident size of an rclone process that starts and stops: the baseline for its growth."""
    import subprocess
    p = subprocess.Popen(["rclone", "version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, ru = os.wait4(p.pid, 0)
    return ru.ru_maxrss


def main() -> None:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    spec = json.load(open(spec_path))
    name = spec["contender"]
    result: dict = {"contender": name}
    started = time.monotonic()
    try:
        # imports first: they are the "idle" state, not part of the run
        handler_module = None
        if name == "url2s3":
            sys.path.insert(0, spec["repo"])
            os.chdir(spec["repo"])
            import handler as handler_module  # noqa: F401  (whatever engine is on disk now)
        else:
            import concurrent.futures  # noqa: F401
            import urllib.request  # noqa: F401

            import boto3  # noqa: F401
            from botocore.config import Config  # noqa: F401
        bodies = load_bodies(spec) if name == "s3-only" else None
        result["import_s"] = time.monotonic() - started
        idle_kb = rclone_idle_kb() if name == "rclone" else proc_status_kb("VmRSS")
        result["idle_rss_kb"] = idle_kb
        threads_before = threading.active_count()
        cpu0, t0 = cpu_now(), time.monotonic()
        runner = {"url2s3": lambda s: run_url2s3(s, handler_module), "sequential": run_sequential,
                  "pool": run_pool, "all-at-once": run_all_at_once, "rclone": run_rclone,
                  "s3-only": lambda s: run_s3_only(s, bodies)}[name]
        ok, failed, errors, extra = runner(spec)
        wall = time.monotonic() - t0
        cpu = cpu_now() - cpu0
        peak_kb = proc_status_kb("VmHWM")
        if name == "rclone":
            cpu = extra.pop("rclone_cpu_s")
            peak_kb = extra.pop("rclone_peak_kb")
        result.update(ok=True, wall_s=wall, cpu_s=cpu, peak_rss_kb=peak_kb,
                      growth_kb=max(0, peak_kb - idle_kb), succeeded=ok, failed=failed, errors=errors,
                      threads_left=threading.active_count() - threads_before, **extra)
    except BaseException as exc:  # report, never hang: the harness reads OUT either way
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
    with open(out_path, "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    os._exit(0)  # do not wait for stray non-daemon threads of a contender


if __name__ == "__main__":
    main()
