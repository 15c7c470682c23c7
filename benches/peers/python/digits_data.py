"""The digits data of examples/digits.rs, for the Python peers: the same split and the same
epoch order as stategrad's `digits.split(360, 0)` and `Batches::shuffle(0).order(0)`.

data/digits.csv: 1797 lines, 64 pixel intensities 0..16 then the label 0..9, no header.
Both orders are stategrad's: a Fisher-Yates shuffle driven by SplitMix64 seeded from
(seed, epoch) (nn/src/data.rs), reimplemented here bit for bit, so every library trains on the
same 1437 rows in the same order (22 batches of 64, the last 29 rows dropped).
"""

import os

import numpy as np

M64 = (1 << 64) - 1
CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "data", "digits.csv")
BATCH = 64
N_TEST = 360


class SplitMix64:
    def __init__(self, seed, epoch):
        self.s = seed & M64
        a = self.next_u64()
        self.s = (a ^ ((epoch * 0xD1B54A32D192ED03) & M64)) & M64

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n):
        zone = M64 - (M64 % n)
        while True:
            v = self.next_u64()
            if v < zone:
                return v % n


def order(n, seed, epoch=0):
    """stategrad's `Batches::order`: the permutation of 0..n for (seed, epoch)."""
    idx = list(range(n))
    rng = SplitMix64(seed, epoch)
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        idx[i], idx[j] = idx[j], idx[i]
    return np.array(idx, dtype=np.int64)


def load():
    """(x_train [1437, 64] float32 / 16, y_train [1437] int32, epoch order [1437] int64)."""
    raw = np.loadtxt(CSV, delimiter=",", dtype=np.float64)
    x, y = (raw[:, :-1] / 16.0).astype(np.float32), raw[:, -1].astype(np.int32)
    split = order(len(y), 0)
    train = split[: len(y) - N_TEST]
    xt, yt = x[train], y[train]
    return xt, yt, order(len(yt), 0)


def init_params(seed=0):
    """PyTorch-Linear-like uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights [in, out] and biases,
    from NumPy, shared by the JAX and PyTorch scripts."""
    rng = np.random.default_rng(seed)
    p = {}
    for name, (i, o) in (("1", (64, 128)), ("2", (128, 10))):
        k = 1.0 / np.sqrt(i)
        p["w" + name] = rng.uniform(-k, k, (i, o)).astype(np.float32)
        p["b" + name] = rng.uniform(-k, k, (o,)).astype(np.float32)
    return p
