#!/usr/bin/env python3
"""W1-W6 of shared/BENCHMARK-WORKLOADS.md and the digits epoch in JAX (CPU, every timed function
under jax.jit; the digits epoch with optax.adam).

Not run by CI; benches/peers/run.sh installs JAX and optax into benches/peers/.venv and runs it:

    pip install "jax[cpu]" optax numpy
    python3 benches/peers/python/jax_workloads.py --threads 2 [--only W1,W2,W5,DIGITS] [--json FILE]

--json FILE appends one JSON line per timed function (library, workload key, threads, median
and min in seconds, repetitions) for benches/peers/report_all.py.

--threads N pins the process to the first N CPUs before JAX starts (XLA's CPU thread pool is
sized from the affinity mask). Every workload checks its result once before timing, and the
script prints the median (and min) over --reps timed calls, each ending in block_until_ready.
"""

import argparse
import json
import math
import os
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="CPUs to pin to (default 2)")
    ap.add_argument("--reps", type=int, default=0, help="timed calls per workload (0: auto)")
    ap.add_argument("--only", default="", help="comma list of workloads, e.g. W1,W5,DIGITS")
    ap.add_argument("--quick", action="store_true", help="a tenth of the default timed calls")
    ap.add_argument("--json", default="", help="append one JSON line per timed function to FILE")
    return ap.parse_args()


ARGS = parse_args()
if hasattr(os, "sched_setaffinity"):
    cpus = sorted(os.sched_getaffinity(0))[: ARGS.threads]
    os.sched_setaffinity(0, cpus)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_enable_x64", False)


def record(key, name, med, times):
    """Append the result as one JSON line to --json (for report_all.py)."""
    if ARGS.json:
        with open(ARGS.json, "a") as f:
            f.write(json.dumps({"lib": "jax", "version": jax.__version__, "workload": key,
                                "name": name, "threads": ARGS.threads, "median_s": med,
                                "min_s": min(times), "reps": len(times)}) + "\n")


def bench(name, fn, reps, extra=None, key=None):
    """Median of `reps` timed calls after 3 warm-up calls; fn must block on its result."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    note = f"  {extra(med)}" if extra else ""
    print(f"{name:<34} median {fmt(med):>10}  min {fmt(min(times)):>10}  ({reps} calls){note}")
    record(key or name, name, med, times)
    return med


def fmt(s):
    if s < 1e-3:
        return f"{s * 1e6:.2f} us"
    if s < 1.0:
        return f"{s * 1e3:.3f} ms"
    return f"{s:.3f} s"


def reps(default):
    if ARGS.reps:
        return ARGS.reps
    return max(5, default // 10) if ARGS.quick else default


def block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


# --- W1: the seed's linear regression step ---------------------------------------------------
def w1():
    x = jnp.linspace(-1.0, 1.0, 20, dtype=jnp.float32).reshape(-1, 1)
    y = 3.0 * x + 1.0

    def loss(p, x, y):
        mse = jnp.mean((x @ p["w"] + p["b"] - y) ** 2)
        return mse + 0.01 * (jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2))

    @jax.jit
    def step(p, x, y):
        l, g = jax.value_and_grad(loss)(p, x, y)
        return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g), l

    p = {"w": jnp.zeros((1, 1), jnp.float32), "b": jnp.zeros((1,), jnp.float32)}
    p1, l0 = step(p, x, y)
    expect = float(np.mean(np.asarray(y, np.float64) ** 2))
    assert abs(float(l0) - expect) < 1e-4, f"W1 guard: {float(l0)} vs {expect}"
    assert abs(float(p1["b"][0]) - 0.2) < 1e-5, "W1 guard: b after one step"

    state = {"p": p}

    def one():
        state["p"], l = step(state["p"], x, y)
        l.block_until_ready()

    bench("W1 jit step (per call)", one, reps(20000), key="W1")

    # 1000 steps inside one compiled loop: the cost per step without Python dispatch.
    @jax.jit
    def many(p, x, y):
        return jax.lax.fori_loop(0, 1000, lambda i, p: step(p, x, y)[0], p)

    bench("W1 jit, 1000 steps in one loop", lambda: block(many(p, x, y)), reps(200),
          extra=lambda m: f"= {m / 1000 * 1e9:.1f} ns per step", key="W1_loop1000")


# --- W2 / W6: the MLP -------------------------------------------------------------------------
DIMS = [784, 512, 512, 10]


def mlp_init(seed=6):
    rng = np.random.default_rng(seed)
    p = {}
    for l in range(3):
        s = math.sqrt(2.0 / DIMS[l])
        p[f"w{l}"] = jnp.asarray(rng.standard_normal((DIMS[l], DIMS[l + 1])) * s, jnp.float32)
        p[f"b{l}"] = jnp.zeros((DIMS[l + 1],), jnp.float32)
    return p


def mlp_loss(p, x, y):
    h = jax.nn.relu(x @ p["w0"] + p["b0"])
    h = jax.nn.relu(h @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits, axis=-1) * y, axis=-1))


def batch(n, seed=7):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, 784)), jnp.float32)
    y = np.zeros((n, 10), np.float32)
    y[np.arange(n), (np.arange(n) * 7) % 10] = 1.0
    return x, jnp.asarray(y)


def w2():
    B = 256
    x, y = batch(B)

    @jax.jit
    def step(p, x, y):
        l, g = jax.value_and_grad(mlp_loss)(p, x, y)
        return jax.tree_util.tree_map(lambda a, b: a - 0.01 * b, p, g), l

    p = mlp_init()
    p1, l0 = step(p, x, y)
    _, l1 = step(p1, x, y)
    assert abs(float(l0) - math.log(10)) < 1.5 and float(l1) < float(l0), f"W2 guard {l0} {l1}"

    flops = 2 * B * (784 * 512 + 512 * 512 + 512 * 10) * 3 - 2 * B * 784 * 512
    state = {"p": p}

    def one():
        state["p"], l = step(state["p"], x, y)
        l.block_until_ready()

    bench("W2 jit step, batch 256", one, reps(200),
          extra=lambda m: f"= {1 / m:.1f} steps/s, {B / m:.0f} samples/s, "
                          f"{flops / m / 1e9:.1f} GFLOP/s", key="W2")


def w6():
    B = 64
    x, y = batch(B)
    p = mlp_init()
    per_example = jax.jit(jax.vmap(
        jax.grad(lambda p, x, y: mlp_loss(p, x[None], y[None])), in_axes=(None, 0, 0)))
    pe = per_example(p, x, y)
    g = jax.grad(mlp_loss)(p, x, y)
    for k in g:
        assert np.allclose(np.mean(pe[k], 0), g[k], rtol=1e-3, atol=1e-5), f"W6 guard {k}"
    bench("W6 jit vmap(grad), batch 64", lambda: block(per_example(p, x, y)), reps(50), key="W6")


# --- W3 / W4: Jacobian and Hessian -----------------------------------------------------------
def w3():
    n = 256
    rng = np.random.default_rng(1)
    s = 1.0 / math.sqrt(n)
    w1_ = jnp.asarray(rng.standard_normal((n, n)) * s, jnp.float32)
    b1 = jnp.asarray(rng.standard_normal(n) * 0.1, jnp.float32)
    w2_ = jnp.asarray(rng.standard_normal((n, n)) * s, jnp.float32)
    b2 = jnp.asarray(rng.standard_normal(n) * 0.1, jnp.float32)
    x = jnp.asarray(rng.standard_normal(n), jnp.float32)

    def f(x):
        return jnp.tanh(w2_ @ jnp.tanh(w1_ @ x + b1) + b2)

    jr, jf = jax.jit(jax.jacrev(f)), jax.jit(jax.jacfwd(f))
    assert np.allclose(jr(x), jf(x), rtol=1e-4, atol=1e-5), "W3 guard: jacrev != jacfwd"
    bench("W3 jit jacrev 256x256", lambda: jr(x).block_until_ready(), reps(500), key="W3_jacrev")
    bench("W3 jit jacfwd 256x256", lambda: jf(x).block_until_ready(), reps(500), key="W3_jacfwd")


def w4():
    n = 512
    rng = np.random.default_rng(2)
    a = jnp.asarray(rng.standard_normal((n, n)) / math.sqrt(n), jnp.float32)
    x = jnp.asarray(rng.standard_normal(n), jnp.float32)

    def f(x):
        return jax.nn.logsumexp(a @ x) + 0.5 * jnp.sum(x * x)

    hfr = jax.jit(jax.jacfwd(jax.jacrev(f)))
    hrr = jax.jit(jax.jacrev(jax.jacrev(f)))
    h = np.asarray(hfr(x))
    assert np.allclose(h, h.T, rtol=1e-4, atol=1e-5), "W4 guard: Hessian not symmetric"
    bench("W4 jit jacfwd(jacrev) 512", lambda: hfr(x).block_until_ready(), reps(100),
          key="W4_fwdrev")
    bench("W4 jit jacrev(jacrev) 512", lambda: hrr(x).block_until_ready(), reps(100),
          key="W4_revrev")


# --- W5: elementwise gradient over 16M floats -------------------------------------------------
def w5():
    n = 1 << 24
    x = jnp.asarray(np.random.default_rng(3).standard_normal(n), jnp.float32)

    def f(x):
        return jnp.sum(jnp.tanh(x) * jax.nn.sigmoid(x) + 0.5 * x * x)

    gf = jax.jit(jax.grad(f))
    g = np.asarray(gf(x), np.float64)
    xs = np.asarray(x, np.float64)
    idx = np.array([0, 1, n // 2, n - 1])
    t, s = np.tanh(xs[idx]), 1.0 / (1.0 + np.exp(-xs[idx]))
    want = (1 - t * t) * s + t * s * (1 - s) + xs[idx]
    assert np.allclose(g[idx], want, atol=1e-4), "W5 guard"
    bench("W5 jit grad, 16M", lambda: gf(x).block_until_ready(), reps(30),
          extra=lambda m: f"= {128 * 2**20 / m / 1e9:.2f} GB/s effective", key="W5")


# --- The digits epoch of examples/digits.rs: 64-128-10 MLP, optax.adam(1e-3), 22 batches ------
def digits():
    import optax
    import digits_data

    xt, yt, order = digits_data.load()
    steps = len(order) // digits_data.BATCH
    rows = [order[s * 64:(s + 1) * 64] for s in range(steps)]

    def logits_of(p, x):
        return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits_of(p, x), y).mean()

    opt = optax.adam(1e-3)

    @jax.jit
    def step(p, s, x, y):
        l, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, l

    def epoch(p, s, losses=None):
        # Host-side batching: NumPy rows of the fixed order, handed to the jitted step.
        for r in rows:
            p, s, l = step(p, s, xt[r], yt[r])
            if losses is not None:
                losses.append(float(l))
        return p, s, l

    def fresh():
        p = {k: jnp.asarray(v) for k, v in digits_data.init_params().items()}
        return p, opt.init(p)

    # Guards: the first epoch's losses fall from about ln 10; after 10 epochs the training loss
    # is below 0.35 and the training accuracy above 90 %.
    p, s = fresh()
    losses = []
    p, s, _ = epoch(p, s, losses)
    assert 1.5 < losses[0] < 3.5 and losses[-1] < losses[0], f"digits guard: {losses}"
    for _ in range(9):
        p, s, _ = epoch(p, s)
    z = logits_of(p, jnp.asarray(xt))
    tl = float(optax.softmax_cross_entropy_with_integer_labels(z, jnp.asarray(yt)).mean())
    acc = float(np.mean(np.argmax(np.asarray(z), 1) == yt))
    print(f"digits guard: epoch-1 loss {losses[0]:.3f} -> {losses[-1]:.3f}; after 10 epochs "
          f"train loss {tl:.4f}, accuracy {100 * acc:.1f} %")
    assert tl < 0.35 and acc > 0.90, f"digits guard: loss {tl}, accuracy {acc}"

    state = {"ps": fresh()}

    def one():
        p, s, l = epoch(*state["ps"])
        jax.block_until_ready((p, l))
        state["ps"] = (p, s)

    bench(f"digits epoch ({steps} steps, batch 64)", one, reps(200),
          extra=lambda m: f"= {m / steps * 1e6:.0f} us per step", key="digits")


def main():
    import optax
    print(f"JAX {jax.__version__}, optax {optax.__version__}, devices {jax.devices()}, "
          f"pinned to {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}"
          f" CPU(s), python {sys.version.split()[0]}")
    todo = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "DIGITS": digits}
    only = [w.strip().upper() for w in ARGS.only.split(",") if w.strip()]
    for name, fn in todo.items():
        if not only or name in only:
            fn()


if __name__ == "__main__":
    main()
