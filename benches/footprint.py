#!/usr/bin/env python3
"""Footprint: binary size and cold start to /ready on SQLite, for one or more builds.

    python3 benches/footprint.py LABEL=path/to/enricher [LABEL=path ...]

For each binary: its size on disk, its size once stripped (`strip` on a copy), and RUNS cold
starts, interleaved across binaries so noise on a shared machine hits all alike. A cold start
is a fresh process on a fresh SQLite file in a temp directory (migrations included, sandbox
on, as `cargo run` starts), timed from spawn to the first 200 from GET /ready, polled every
millisecond. Prints the median, minimum and maximum.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = 11
DEADLINE = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def cold_start(binary):
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": f"sqlite://{tmp}/enricher.db",
            "PORT": str(port),
            "ENRICHER__SERVER__HOST": "127.0.0.1",
            "ENRICHER__METRICS__HOST": "127.0.0.1",
            "ENRICHER__METRICS__PORT": str(free_port()),
            "RUST_LOG": "warn",
        }
        start = time.perf_counter()
        child = subprocess.Popen(
            [binary, "serve"], cwd=tmp, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            while not ready(port):
                if child.poll() is not None:
                    raise SystemExit(f"{binary} exited with {child.returncode}")
                if time.perf_counter() - start > DEADLINE:
                    raise SystemExit(f"{binary} not ready within {DEADLINE} s")
                time.sleep(0.001)
            return (time.perf_counter() - start) * 1000.0
        finally:
            child.terminate()
            child.wait()


def stripped_size(binary):
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "enricher")
        shutil.copy(binary, copy)
        subprocess.run(["strip", copy], check=True)
        return os.path.getsize(copy)


def main():
    builds = [arg.split("=", 1) for arg in sys.argv[1:]]
    builds = [(b[0], os.path.abspath(b[1])) if len(b) == 2 else b for b in builds]
    if not builds or any(len(b) != 2 for b in builds):
        raise SystemExit(__doc__)
    times = {label: [] for label, _ in builds}
    for label, binary in builds:
        cold_start(binary)  # unmeasured: page cache warm for every build alike
    for _ in range(RUNS):
        for label, binary in builds:
            times[label].append(cold_start(binary))
    mib = 1024 * 1024
    print(f"| build | on disk | stripped | cold start to /ready, median of {RUNS} (min–max) |")
    print("|---|---|---|---|")
    for label, binary in builds:
        t = times[label]
        print(
            f"| {label} | {os.path.getsize(binary) / mib:.1f} MiB | "
            f"{stripped_size(binary) / mib:.1f} MiB | "
            f"{statistics.median(t):.1f} ms ({min(t):.1f}–{max(t):.1f}) |"
        )


if __name__ == "__main__":
    main()
