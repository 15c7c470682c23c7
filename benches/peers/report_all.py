#!/usr/bin/env python3
"""Merge one run.sh run into markdown: criterion's estimates.json (stategrad, candle, burn) and
the JSON lines of the JAX and PyTorch scripts, round by round, with the machine's measured FMA
peak and memory bandwidth.

Usage: python3 report_all.py RUN_DIR   (RUN_DIR as written by run.sh: machine.json,
versions.json, meta.json, round1/criterion/..., round1/python.jsonl, round2/...)

Tables: (1) the median time per workload x threads x library (the median over rounds of each
round's median); (2) the time ratio stategrad_jit / peer within each round (< 1: stategrad is
faster), so that every ratio compares figures taken minutes apart; (3) for the GEMM-bound rows
(W2, digits) GFLOP/s and the fraction of the measured FMA peak at that thread count, and for W5
the effective GB/s against the measured triad bandwidth.
"""
import glob
import json
import os
import statistics
import sys

WORKLOADS = [
    # (key, criterion group, label)
    ("W1", "W1_linear_step", "W1 linear step"),
    ("W1_loop1000", "W1_loop_1000", "W1, 1000 steps in one compiled loop"),
    ("W2", "W2_mlp_step_b256", "W2 MLP step, batch 256"),
    ("W5", "W5_elementwise_grad_16M", "W5 elementwise grad, 16M"),
    ("W3_jacrev", "W3_jacrev_256", "W3 jacrev 256×256"),
    ("W3_jacfwd", "W3_jacfwd_256", "W3 jacfwd 256×256"),
    ("W4_fwdrev", "W4_hessian_512", "W4 Hessian 512×512"),
    ("digits", "digits_epoch_mlp", "digits epoch (22 steps)"),
]
RUST_LIBS = ["stategrad_eager", "stategrad_jit", "burn", "candle"]
PY_LIBS = ["jax", "torch"]
LIBS = RUST_LIBS + PY_LIBS
PEERS = ["burn", "candle", "jax", "torch"]
THREADS = [1, 2]
W2_FLOPS = 2 * 256 * (784 * 512 + 512 * 512 + 512 * 10) * 3 - 2 * 256 * 784 * 512
# Digits step: forward 2*64*(64*128 + 128*10), backward twice that minus layer 1's input grad.
DIGITS_FLOPS = 22 * (3 * 2 * 64 * (64 * 128 + 128 * 10) - 2 * 64 * 64 * 128)
W5_BYTES = 128 << 20  # 64 MiB read + 64 MiB written
FLOPS = {"W2": W2_FLOPS, "digits": DIGITS_FLOPS}


def fmt(s):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def load_round(rdir):
    """{(key, lib, threads): median seconds} for one round."""
    out = {}
    for key, group, _ in WORKLOADS:
        for lib in RUST_LIBS:
            for t in THREADS:
                p = os.path.join(rdir, "criterion", group, lib, str(t), "new", "estimates.json")
                if os.path.exists(p):
                    with open(p) as f:
                        out[(key, lib, t)] = json.load(f)["median"]["point_estimate"] * 1e-9
    p = os.path.join(rdir, "python.jsonl")
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                r = json.loads(line)
                out[(r["workload"], r["lib"], int(r["threads"]))] = r["median_s"]
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    run = sys.argv[1]
    rounds = sorted(glob.glob(os.path.join(run, "round*")))
    data = [load_round(r) for r in rounds]
    machine = json.load(open(os.path.join(run, "machine.json")))
    versions = json.load(open(os.path.join(run, "versions.json")))
    meta = json.load(open(os.path.join(run, "meta.json"))) if os.path.exists(
        os.path.join(run, "meta.json")) else {}

    def med(key, lib, t):
        v = [d[(key, lib, t)] for d in data if (key, lib, t) in d]
        return statistics.median(v) if v else None

    out = []
    w = out.append
    w(f"# Peers in the same run: {meta.get('date', '?')}")
    w("")
    w(f"Machine: {machine['cpu']}, {meta.get('cpus', '?')} logical CPUs"
      f"{', ' + meta['mem'] if meta.get('mem') else ''}. stategrad at commit "
      f"`{meta.get('commit', '?')}`. Mode: {meta.get('mode', '?')}; {len(rounds)} round(s), each "
      "the criterion peers groups (stategrad, burn at 1 and 2 threads; candle at 2, then at 1 in "
      "a second process), then the JAX script and the PyTorch script at 1 and 2 threads. "
      f"run.sh took {meta.get('elapsed', '?')}.")
    load_path = os.path.join(run, "load.log")
    if os.path.exists(load_path):
        loads = [float(l.split()[1]) for l in open(load_path) if len(l.split()) >= 2]
        if loads:
            first = open(load_path).readline().split()[0]
            w("")
            w(f"Host load average (1 min), sampled every 30 s from {first} UTC: "
              f"{min(loads):.1f}–{max(loads):.1f}, median {statistics.median(loads):.1f} "
              f"({len(loads)} samples) on {meta.get('cpus', '?')} CPUs. Other processes share "
              "this host: absolute times move between runs; compare the ratios of one round.")
    w("")
    w("Measured on this machine in this run (`machine_peak`): f32 FMA peak "
      + ", ".join(f"{machine['fma_gflops'][str(t)]:.1f} GFLOP/s at {t} thread{'s' * (t > 1)}"
                  for t in THREADS)
      + f" ({machine['isa']}); STREAM-style triad "
      + ", ".join(f"{machine['triad_gbs'][str(t)]:.1f} GB/s at {t} thread{'s' * (t > 1)}"
                  for t in THREADS)
      + " (copy " + ", ".join("%.1f" % machine["copy_gbs"][str(t)] for t in THREADS) + " GB/s; "
      f"{machine['array_mib']} MiB arrays).")
    w("")
    w("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    w("")
    w("## Median time per iteration (median over rounds of each round's median)")
    w("")
    w("| workload | threads | " + " | ".join(LIBS) + " |")
    w("|---|---|" + "---|" * len(LIBS))
    for key, _, label in WORKLOADS:
        for t in THREADS:
            cells = []
            for lib in LIBS:
                v = med(key, lib, t)
                cells.append(fmt(v) if v is not None else "–")
            w(f"| {label} | {t} | " + " | ".join(cells) + " |")
    w("")
    w("## stategrad_jit time / peer time, per round (< 1: stategrad faster)")
    w("")
    w("Each cell: the ratio in round 1 · round 2 (…), both figures from the same round.")
    w("")
    w("| workload | threads | " + " | ".join(PEERS) + " |")
    w("|---|---|" + "---|" * len(PEERS))
    for key, _, label in WORKLOADS:
        for t in THREADS:
            cells = []
            for peer in PEERS:
                rs = []
                for d in data:
                    a, b = d.get((key, "stategrad_jit", t)), d.get((key, peer, t))
                    if a is not None and b is not None:
                        rs.append(f"{a / b:.3g}")
                cells.append(" · ".join(rs) if rs else "–")
            w(f"| {label} | {t} | " + " | ".join(cells) + " |")
    w("")
    w("## Against the machine: GEMM-bound rows (GFLOP/s, % of the measured FMA peak) and W5 "
      "(effective GB/s, % of the measured triad bandwidth)")
    w("")
    w("| workload | threads | " + " | ".join(LIBS) + " |")
    w("|---|---|" + "---|" * len(LIBS))
    for key, _, label in WORKLOADS:
        if key not in ("W2", "digits", "W5"):
            continue
        for t in THREADS:
            cells = []
            for lib in LIBS:
                v = med(key, lib, t)
                if v is None:
                    cells.append("–")
                elif key == "W5":
                    gbs = W5_BYTES / v / 1e9
                    cells.append(f"{gbs:.2f} GB/s ({100 * gbs / machine['triad_gbs'][str(t)]:.0f} %)")
                else:
                    gf = FLOPS[key] / v / 1e9
                    cells.append(f"{gf:.1f} ({100 * gf / machine['fma_gflops'][str(t)]:.0f} %)")
            w(f"| {label} | {t} | " + " | ".join(cells) + " |")
    w("")
    w(f"GEMM work: W2 {W2_FLOPS / 1e6:.1f} MFLOP per step; digits {DIGITS_FLOPS / 1e6:.1f} MFLOP "
      "per epoch (22 × (forward 2·64·(64·128+128·10), backward twice that less the first "
      "layer's input gradient)). W5 moves 128 MiB per call (x read, gradient written).")
    w("")
    w("Rounds: " + "; ".join(f"{os.path.basename(r)} {meta.get(os.path.basename(r), '')}".strip()
                             for r in rounds) + ".")
    print("\n".join(out))


if __name__ == "__main__":
    main()
