"""Summarise py-spy collapsed stacks (--format raw): the functions with most self and inclusive samples.

Usage: python bench/profile_summary.py FILE [--top N] [--match TEXT]
"""

from __future__ import annotations

import argparse
from collections import Counter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default="", help="only stacks containing this text")
    a = p.parse_args()
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in open(a.file, encoding="utf-8", errors="replace"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit() or (a.match and a.match not in stack):
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        self_c[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    print(f"{total} samples")
    print("\n-- self --")
    for f, c in self_c.most_common(a.top):
        print(f"{c / total:6.1%}  {f}")
    print("\n-- inclusive --")
    for f, c in incl.most_common(a.top):
        print(f"{c / total:6.1%}  {f}")


if __name__ == "__main__":
    main()
