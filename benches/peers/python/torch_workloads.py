#!/usr/bin/env python3
"""W1-W6 of shared/BENCHMARK-WORKLOADS.md and the digits epoch in PyTorch (CPU): eager autograd,
torch.func for the Jacobian, Hessian and per-example gradients, torch.optim.Adam for the digits
epoch, and optionally torch.compile.

Not run by CI; benches/peers/run.sh installs PyTorch into benches/peers/.venv and runs it:

    pip install torch numpy
    python3 benches/peers/python/torch_workloads.py --threads 2 [--compile] [--only W1,DIGITS] [--json FILE]

--json FILE appends one JSON line per timed function (library, workload key, threads, median
and min in seconds, repetitions) for benches/peers/report_all.py.

--threads N calls torch.set_num_threads(N) and pins the process to the first N CPUs. Every
workload checks its result once before timing, and the script prints the median (and min) over
--reps timed calls.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch.func import grad, jacfwd, jacrev, vmap


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads and CPUs (default 2)")
    ap.add_argument("--reps", type=int, default=0, help="timed calls per workload (0: auto)")
    ap.add_argument("--only", default="", help="comma list of workloads, e.g. W1,W5,DIGITS")
    ap.add_argument("--quick", action="store_true", help="a tenth of the default timed calls")
    ap.add_argument("--json", default="", help="append one JSON line per timed function to FILE")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd W1, W2, W5")
    return ap.parse_args()


ARGS = parse_args()
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: ARGS.threads])
torch.set_num_threads(ARGS.threads)
torch.manual_seed(0)


def fmt(s):
    if s < 1e-3:
        return f"{s * 1e6:.2f} us"
    if s < 1.0:
        return f"{s * 1e3:.3f} ms"
    return f"{s:.3f} s"


def record(key, name, med, times):
    """Append the result as one JSON line to --json (for report_all.py)."""
    if ARGS.json:
        with open(ARGS.json, "a") as f:
            f.write(json.dumps({"lib": "torch", "version": torch.__version__, "workload": key,
                                "name": name, "threads": ARGS.threads, "median_s": med,
                                "min_s": min(times), "reps": len(times)}) + "\n")


def bench(name, fn, reps, extra=None, key=None):
    """Median of `reps` timed calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    note = f"  {extra(med)}" if extra else ""
    print(f"{name:<38} median {fmt(med):>10}  min {fmt(min(times)):>10}  ({reps} calls){note}")
    record(key or name, name, med, times)
    return med


def reps(default):
    if ARGS.reps:
        return ARGS.reps
    return max(5, default // 10) if ARGS.quick else default


def sgd_(params, grads, lr):
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)


# --- W1: the seed's linear regression step ---------------------------------------------------
def w1():
    x = torch.linspace(-1.0, 1.0, 20).reshape(-1, 1)
    y = 3.0 * x + 1.0
    w = torch.zeros(1, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)

    def step():
        loss = ((x @ w + b - y) ** 2).mean() + 0.01 * ((w ** 2).sum() + (b ** 2).sum())
        gw, gb = torch.autograd.grad(loss, (w, b))
        sgd_((w, b), (gw, gb), 0.1)
        return loss

    l0 = step().item()
    expect = float(np.mean(y.double().numpy() ** 2))
    assert abs(l0 - expect) < 1e-4 and abs(b.item() - 0.2) < 1e-5, f"W1 guard: {l0} vs {expect}"
    bench("W1 eager step", step, reps(20000), key="W1")
    if ARGS.compile:
        cstep = torch.compile(step)
        bench("W1 torch.compile step", cstep, reps(20000), key="W1_compile")


# --- W2 / W6: the MLP -------------------------------------------------------------------------
DIMS = [784, 512, 512, 10]


def mlp_params(seed=6):
    rng = np.random.default_rng(seed)
    p = {}
    for l in range(3):
        s = math.sqrt(2.0 / DIMS[l])
        p[f"w{l}"] = torch.tensor(rng.standard_normal((DIMS[l], DIMS[l + 1])) * s,
                                  dtype=torch.float32, requires_grad=True)
        p[f"b{l}"] = torch.zeros(DIMS[l + 1], requires_grad=True)
    return p


def mlp_loss(p, x, y):
    h = torch.relu(x @ p["w0"] + p["b0"])
    h = torch.relu(h @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    return -(torch.log_softmax(logits, dim=-1) * y).sum(-1).mean()


def batch(n, seed=7):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((n, 784)), dtype=torch.float32)
    y = torch.zeros(n, 10)
    y[torch.arange(n), (torch.arange(n) * 7) % 10] = 1.0
    return x, y


def w2():
    B = 256
    x, y = batch(B)
    p = mlp_params()
    params = list(p.values())

    def step():
        loss = mlp_loss(p, x, y)
        sgd_(params, torch.autograd.grad(loss, params), 0.01)
        return loss

    l0, l1 = step().item(), step().item()
    assert abs(l0 - math.log(10)) < 1.5 and l1 < l0, f"W2 guard {l0} -> {l1}"
    flops = 2 * B * (784 * 512 + 512 * 512 + 512 * 10) * 3 - 2 * B * 784 * 512
    extra = (lambda m: f"= {1 / m:.1f} steps/s, {B / m:.0f} samples/s, "
                       f"{flops / m / 1e9:.1f} GFLOP/s")
    bench("W2 eager step, batch 256", step, reps(200), extra, key="W2")
    if ARGS.compile:
        bench("W2 torch.compile step, batch 256", torch.compile(step), reps(200), extra,
              key="W2_compile")


def w6():
    B = 64
    x, y = batch(B)
    p = {k: v.detach() for k, v in mlp_params().items()}

    def single(p, x, y):
        return mlp_loss(p, x[None], y[None])

    per_example = vmap(grad(single), in_dims=(None, 0, 0))
    pe = per_example(p, x, y)
    g = grad(mlp_loss)(p, x, y)
    for k in g:
        assert torch.allclose(pe[k].mean(0), g[k], rtol=1e-3, atol=1e-5), f"W6 guard {k}"
    bench("W6 vmap(grad), batch 64", lambda: per_example(p, x, y), reps(30), key="W6")


# --- W3 / W4: Jacobian and Hessian -----------------------------------------------------------
def w3():
    n = 256
    rng = np.random.default_rng(1)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    s = 1.0 / math.sqrt(n)
    w1_, b1 = t(rng.standard_normal((n, n)) * s), t(rng.standard_normal(n) * 0.1)
    w2_, b2 = t(rng.standard_normal((n, n)) * s), t(rng.standard_normal(n) * 0.1)
    x = t(rng.standard_normal(n))

    def f(x):
        return torch.tanh(w2_ @ torch.tanh(w1_ @ x + b1) + b2)

    jr, jf = jacrev(f), jacfwd(f)
    assert torch.allclose(jr(x), jf(x), rtol=1e-4, atol=1e-5), "W3 guard: jacrev != jacfwd"
    bench("W3 jacrev 256x256", lambda: jr(x), reps(300), key="W3_jacrev")
    bench("W3 jacfwd 256x256", lambda: jf(x), reps(300), key="W3_jacfwd")


def w4():
    n = 512
    rng = np.random.default_rng(2)
    a = torch.tensor(rng.standard_normal((n, n)) / math.sqrt(n), dtype=torch.float32)
    x = torch.tensor(rng.standard_normal(n), dtype=torch.float32)

    def f(x):
        return torch.logsumexp(a @ x, 0) + 0.5 * (x * x).sum()

    h = jacfwd(jacrev(f))
    hx = h(x)
    assert torch.allclose(hx, hx.T, rtol=1e-4, atol=1e-5), "W4 guard: Hessian not symmetric"
    bench("W4 jacfwd(jacrev) 512", lambda: h(x), reps(20), key="W4_fwdrev")


# --- W5: elementwise gradient over 16M floats -------------------------------------------------
def w5():
    n = 1 << 24
    x = torch.tensor(np.random.default_rng(3).standard_normal(n), dtype=torch.float32)

    def f(x):
        return (torch.tanh(x) * torch.sigmoid(x) + 0.5 * x * x).sum()

    def g_eager(x):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(x), x)
        return g

    g = g_eager(x).double()
    xs = x.double()
    idx = torch.tensor([0, 1, n // 2, n - 1])
    t, s = torch.tanh(xs[idx]), torch.sigmoid(xs[idx])
    want = (1 - t * t) * s + t * s * (1 - s) + xs[idx]
    assert torch.allclose(g[idx], want, atol=1e-4), "W5 guard"
    extra = lambda m: f"= {128 * 2**20 / m / 1e9:.2f} GB/s effective"  # noqa: E731
    bench("W5 eager grad, 16M", lambda: g_eager(x), reps(10), extra, key="W5")
    if ARGS.compile:
        gc = torch.compile(grad(f))
        assert torch.allclose(gc(x).double()[idx], want, atol=1e-4), "W5 guard (compiled)"
        bench("W5 torch.compile grad, 16M", lambda: gc(x), reps(20), extra, key="W5_compile")


# --- The digits epoch of examples/digits.rs: 64-128-10 MLP, torch.optim.Adam(lr=1e-3) ---------
def digits():
    import digits_data

    xt_np, yt_np, order_np = digits_data.load()
    xt, yt = torch.from_numpy(xt_np), torch.from_numpy(yt_np).long()
    order = torch.from_numpy(order_np)
    steps = len(order_np) // digits_data.BATCH

    def logits_of(p, x):
        return torch.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def fresh():
        p = {k: torch.tensor(v, requires_grad=True) for k, v in digits_data.init_params().items()}
        return p, torch.optim.Adam(p.values(), lr=1e-3)  # betas (0.9, 0.999), eps 1e-8

    def epoch(p, opt, losses=None):
        for s in range(steps):
            idx = order[s * 64:(s + 1) * 64]  # host-side batching: index the training tensors
            loss = torch.nn.functional.cross_entropy(logits_of(p, xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if losses is not None:
                losses.append(loss.item())
        return loss.item()

    # Guards: the first epoch's losses fall from about ln 10; after 10 epochs the training loss
    # is below 0.35 and the training accuracy above 90 %.
    p, opt = fresh()
    losses = []
    epoch(p, opt, losses)
    assert 1.5 < losses[0] < 3.5 and losses[-1] < losses[0], f"digits guard: {losses}"
    for _ in range(9):
        epoch(p, opt)
    with torch.no_grad():
        z = logits_of(p, xt)
        tl = torch.nn.functional.cross_entropy(z, yt).item()
        acc = (z.argmax(1) == yt).double().mean().item()
    print(f"digits guard: epoch-1 loss {losses[0]:.3f} -> {losses[-1]:.3f}; after 10 epochs "
          f"train loss {tl:.4f}, accuracy {100 * acc:.1f} %")
    assert tl < 0.35 and acc > 0.90, f"digits guard: loss {tl}, accuracy {acc}"

    p, opt = fresh()
    bench(f"digits epoch ({steps} steps, batch 64)", lambda: epoch(p, opt), reps(200),
          extra=lambda m: f"= {m / steps * 1e6:.0f} us per step", key="digits")


def main():
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"python {sys.version.split()[0]}")
    todo = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "DIGITS": digits}
    only = [w.strip().upper() for w in ARGS.only.split(",") if w.strip()]
    for name, fn in todo.items():
        if not only or name in only:
            fn()


if __name__ == "__main__":
    main()
