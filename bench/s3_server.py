"""moto's S3 server in a process of its own, so its CPU and memory are not charged to a contender.

Prints `READY http://127.0.0.1:<port>` on stdout once it answers, and stops on SIGTERM/SIGINT or
when its stdin reaches end-of-file (the harness holds the other end, so a crashed harness leaves no
server behind).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.request

from moto.server import ThreadedMotoServer


def main() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("moto server did not answer within 30 s")
            time.sleep(0.05)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def watch_stdin() -> None:
        while os.read(sys.stdin.fileno(), 4096):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"READY {url}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
