#!/usr/bin/env python3
"""Turn the console output of a multi-thread criterion run into a scaling table (markdown).

Usage:
  STATEGRAD_BENCH_THREADS=1,2,4,8,16 cargo bench --bench workloads -- \\
      --warm-up-time 0.5 --measurement-time 1.5 '<filter>' | tee run.log
  python3 scripts/scaling_report.py run.log

One row per benchmark (the part before the thread count), one column per thread count: the
median and the speed-up over one thread.
"""
import re
import sys
from collections import OrderedDict

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse(path):
    cur, out = None, OrderedDict()
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^Benchmarking ([^:]+)$", line.rstrip("\n"))
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if m and cur and cur not in out:
            out[cur] = float(m.group(1)) * UNITS[m.group(2)]
    return out


def fmt(sec):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if sec >= scale:
            return f"{sec / scale:.3g} {unit}"
    return f"{sec / 1e-9:.3g} ns"


def main():
    times = parse(sys.argv[1])
    rows, threads = OrderedDict(), set()
    for name, t in times.items():
        base, _, last = name.rpartition("/")
        if last.isdigit():
            rows.setdefault(base, {})[int(last)] = t
            threads.add(int(last))
    cols = sorted(threads)
    print("| benchmark | " + " | ".join(f"{c} thr" for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for base, by in rows.items():
        one = by.get(1)
        cells = []
        for c in cols:
            if c not in by:
                cells.append("")
            elif one and c != 1:
                cells.append(f"{fmt(by[c])} ({one / by[c]:.1f}×)")
            else:
                cells.append(fmt(by[c]))
        print(f"| {base} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
