"""Run every benchmark (each in its own process) and print one table of all figures.

Usage: python bench/run_all.py [--quick] [--only NAME ...] [--markdown FILE]

Each benchmark prints its own table and one `BENCH-JSON` line; this collects those lines.
Exit status: 0 when every benchmark ran (targets are reported, not enforced: a missed
target is a finding for bench/RESULTS.md, not a crash), 1 when one failed to run.
bench/eventlog_bench.py (the event log's own benchmark) is run too and shown as-is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import PYTHON, REPO, Row, format_table, machine  # noqa: E402

BENCHES = ("latency", "catchup", "fanout", "reconnect", "apicost", "memory", "streams", "soak",
           "failover", "replication", "takeover")  # the last three: manager HA (#14)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run of every benchmark, no thresholds")
    p.add_argument("--only", nargs="*", choices=[*BENCHES, "eventlog"], default=None)
    p.add_argument("--markdown", type=Path, default=None, help="also write the combined table to this file")
    a = p.parse_args()
    names = a.only or [*BENCHES, "eventlog"]
    info = machine()
    rows: list[Row] = []
    failed: list[str] = []
    extra: list[str] = []
    for name in names:
        cmd = [PYTHON, str(REPO / "bench" / f"{name}_bench.py"), *(["--quick"] if a.quick else [])]
        t0 = time.monotonic()
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        took = time.monotonic() - t0
        found = False
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH-JSON "):
                data = json.loads(line[len("BENCH-JSON "):])
                rows.extend(Row(**r) for r in data["rows"])
                found = True
        if proc.returncode != 0 or (not found and name != "eventlog"):
            failed.append(name)
            print(f"== {name} FAILED (exit {proc.returncode}) after {took:.0f} s:\n{proc.stdout[-3000:]}", flush=True)
        elif not found:  # a benchmark with its own table format: shown as it printed it
            extra.append(f"\n### {name}\n\n```\n{proc.stdout.strip()}\n```")
            print(f"== {name} done in {took:.0f} s", flush=True)
        else:
            print(f"== {name} done in {took:.0f} s", flush=True)
    header = (f"k8s-edge benchmarks{' (quick)' if a.quick else ''}: {info['date']}, nproc {info['nproc']}, "
              f"memory {info['memory']}, Python {info['python']}, grpcio {info['grpcio']}, lmdb {info['lmdb']}, "
              f"load at start {info['load']}")
    table = format_table(rows, title=header) + "".join(extra)
    print(table)
    if a.markdown:
        a.markdown.write_text(table + "\n")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
