#!/usr/bin/env python3
"""Print the peers table (medians from criterion's estimates.json) as markdown.

Usage (after the bench commands of README.md): python3 report.py
(run.sh and report_all.py make the full table, with JAX, PyTorch and the machine's peak.)
Rows: workload x thread count; columns: one per library. Each cell is the median time per
iteration of the latest run of that bench id ("new"), with W2's GFLOP/s and W5's GB/s.
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "target", "criterion")
GROUPS = [
    ("W1_linear_step", "W1 step"),
    ("W2_mlp_step_b256", "W2 step, batch 256"),
    ("W5_elementwise_grad_16M", "W5 grad, 16M"),
    ("digits_epoch_mlp", "digits epoch (22 steps)"),
]
LIBS = ["stategrad_eager", "stategrad_jit", "burn", "candle"]
W2_FLOPS = 2 * 256 * (784 * 512 + 512 * 512 + 512 * 10) * 3 - 2 * 256 * 784 * 512
W5_BYTES = 128 << 20


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def median(group, lib, threads):
    path = os.path.join(ROOT, group, lib, str(threads), "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def cell(group, ns):
    if ns is None:
        return "–"
    s = fmt(ns)
    if group.startswith("W2"):
        s += f" ({W2_FLOPS / ns:.0f} GFLOP/s)"
    elif group.startswith("W5"):
        s += f" ({W5_BYTES / ns:.2f} GB/s)"
    return s


def main():
    if not os.path.isdir(ROOT):
        sys.exit("no criterion results: run the commands of README.md first")
    print("| workload | threads | " + " | ".join(LIBS) + " |")
    print("|---|---|" + "---|" * len(LIBS))
    for group, label in GROUPS:
        for t in (1, 2):
            cells = [cell(group, median(group, lib, t)) for lib in LIBS]
            print(f"| {label} | {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
