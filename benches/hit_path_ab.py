#!/usr/bin/env python3
"""Hit path, two builds compared in one run.

    python3 benches/hit_path_ab.py BEFORE_BENCH_BINARY AFTER_BENCH_BINARY

Each argument is a `hit_path` bench binary (`cargo bench --bench hit_path --no-run` prints
its path), typically one built from the commit before a change and one from the change.
Settings alone cannot switch a code change off, so "before" and "after" are two builds; they
run in alternating rounds, each build on a database of its own (`enricher_bench_ab_before`,
`_after`: each applies its own migrations) that its first round generates (`BENCH_PARTIES`,
default 1 000 000), each round on parties no earlier round read, and every latency goes to one
samples file from which the table below is computed.

Environment: `BENCH_PARTIES`, `BENCH_HITS` (per figure and round, default 2 000),
`BENCH_RATE` (500), `BENCH_ROUNDS` (3 per build), `TEST_DATABASE_URL` (the Postgres on the
loopback). The databases are dropped at the end unless `BENCH_KEEP=1`; kept ones are used
again as they are (no new generation), and `BENCH_SKIP_BASE` then moves past the parties
earlier runs read.
"""

import os
import subprocess
import sys
import tempfile
import urllib.parse

WARMUP = 50  # benches/hit_path.rs


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def ms(ns):
    return f"{ns / 1e6:.2f} ms"


def psql(admin_url, sql):
    subprocess.run(["psql", admin_url, "-X", "-q", "-c", sql], check=True)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    before, after = sys.argv[1], sys.argv[2]
    parties = int(os.environ.get("BENCH_PARTIES", "1000000").replace("_", ""))
    hits = int(os.environ.get("BENCH_HITS", "2000"))
    rate = os.environ.get("BENCH_RATE", "500")
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    admin = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    parsed = urllib.parse.urlparse(admin)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("TEST_DATABASE_URL is not on the loopback (benchmarks stay local)")
    # A database per build: each applies its own migrations, which the other may not know.
    urls = {}
    for label in ("before", "after"):
        name = f"enricher_bench_ab_{label}"
        urls[label] = urllib.parse.urlunparse(parsed._replace(path=f"/{name}"))
        exists = subprocess.run(
            ["psql", admin, "-X", "-A", "-t", "-c",
             f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        if not exists:
            psql(admin, f"CREATE DATABASE {name}")
    per_round = 2 * hits + WARMUP
    needed = 2 * rounds * per_round
    needed += int(os.environ.get("BENCH_SKIP_BASE", "0"))
    if parties < needed:
        sys.exit(f"BENCH_PARTIES={parties} is too few: at least {needed}")
    samples = tempfile.NamedTemporaryFile(prefix="hit_path_ab_", suffix=".tsv", delete=False)
    samples.close()
    try:
        skip = int(os.environ.get("BENCH_SKIP_BASE", "0"))
        for r in range(rounds):
            for label, binary in (("before", before), ("after", after)):
                env = dict(
                    os.environ,
                    BENCH_DATABASE_URL=urls[label],
                    BENCH_PARTIES=str(parties),
                    BENCH_HITS=str(hits),
                    BENCH_RATE=rate,
                    BENCH_ROUNDS="1",
                    BENCH_CONFIGS="defaults",
                    BENCH_SKIP=str(skip),
                    BENCH_SAMPLES_OUT=samples.name,
                    BENCH_LABEL=label,
                )
                print(f"\n==> round {r + 1}, {label}: {binary}", flush=True)
                subprocess.run([binary, "--bench"], env=env, check=True)
                skip += per_round
        figures = {}
        with open(samples.name) as f:
            for line in f:
                label, _config, kind, e2e, ack = line.split("\t")
                figures.setdefault((label, kind), ([], []))
                figures[(label, kind)][0].append(float(e2e))
                figures[(label, kind)][1].append(float(ack))
    finally:
        os.unlink(samples.name)
        if os.environ.get("BENCH_KEEP") != "1":
            for label in ("before", "after"):
                psql(admin, f"DROP DATABASE IF EXISTS enricher_bench_ab_{label} WITH (FORCE)")

    print(f"\n## Hit path, before and after, {rounds} alternating rounds each, {rate} webhooks/s")
    print("webhook sent -> message received by the sandbox CRM (the 202 alone in the last columns)\n")
    print("| figure | build | n | p50 | p95 | p99 | max | p99 vs before | 202 p50 | 202 p99 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    verdict = {}
    for kind in ("memory", "database"):
        base = None
        for label in ("before", "after"):
            e2e, ack = figures[(label, kind)]
            e2e.sort()
            ack.sort()
            p99 = percentile(e2e, 0.99)
            if label == "before":
                base = p99
            ratio = f"{p99 / base:.2f}x" if label == "after" else "1.00x"
            print(
                f"| {kind} hits | {label} | {len(e2e)} | {ms(percentile(e2e, 0.5))} | "
                f"{ms(percentile(e2e, 0.95))} | {ms(p99)} | {ms(e2e[-1])} | {ratio} | "
                f"{ms(percentile(ack, 0.5))} | {ms(percentile(ack, 0.99))} |"
            )
            if label == "after":
                verdict[kind] = p99
    mem, db = verdict["memory"], verdict["database"]
    print(
        f"\ntarget memory-hit p99 <= 5 ms: {'reached' if mem <= 5e6 else 'missed'} ({ms(mem)}); "
        f"database-hit p99 <= 15 ms: {'reached' if db <= 15e6 else 'missed'} ({ms(db)})"
    )


if __name__ == "__main__":
    main()
