#!/usr/bin/env bash
# Peers in the same run, one command: stategrad, candle, burn, JAX and PyTorch on W1 (a step, and
# 1000 steps in one compiled loop), W2, W3, W4, W5 and the digits epoch, interleaved over two
# rounds, with the machine's measured FMA peak and memory bandwidth, merged into
# benches/results/peers-<date>.md (W1's loop, W3 and W4: stategrad, JAX and PyTorch only).
#
#   benches/peers/run.sh [--quick] [--rounds N]
#
# 1. creates or reuses benches/peers/.venv and installs python/requirements.txt (pinned JAX,
#    optax, PyTorch, NumPy; PyTorch is the default PyPI wheel);
# 2. builds the peers bench and `machine_peak`, and measures the f32 FMA peak (1 and 2 threads)
#    and the triad/copy bandwidth (512 MiB arrays);
# 3. round r = 1..N (default 2): `cargo bench --bench peers` (stategrad and burn at 1 and 2
#    threads, candle at 2), `RAYON_NUM_THREADS=1 cargo bench --bench peers -- candle` (candle at
#    1), then the JAX script and the PyTorch script at 1 and 2 threads (W1, W2, W5, DIGITS);
#    each round's criterion estimates and the scripts' JSON lines are kept in the run directory;
# 4. report_all.py merges them into markdown, written to benches/results/peers-<date>.md and
#    printed (peers-<date>-quick.md with --quick); a full run also replaces the generated part
#    of BENCHMARKS.md (between its `peers-run` markers) with it. The GEMM probe
#    (simd-kernels/examples/gemm_probe.rs) runs once after the machine's peak is measured.
#
# --quick: criterion `--warm-up-time 1 --measurement-time 3` (the W1/W2/W5 groups set those
# times themselves in every mode; this shortens the digits group) and a tenth of the Python
# scripts' timed calls.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$HERE"

QUICK=0
ROUNDS=2
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        -h|--help) sed -n '2,24p' "$HERE/run.sh"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

START=$(date +%s)
DATE=$(date -u +%Y-%m-%d)
RUN="$HERE/target/peers-run/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN"
log() { echo "[run.sh $(date -u +%H:%M:%S)] $*" >&2; }

# The host's load average every 30 s while the run lasts (the table reports its range: on a
# shared host other processes' load is the main source of noise).
( while true; do echo "$(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 30; done ) \
    >"$RUN/load.log" 2>/dev/null &
LOADPID=$!
trap 'kill "$LOADPID" 2>/dev/null || true' EXIT

# --- 1. Python environment --------------------------------------------------------------------
PY="$HERE/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
    log "creating $HERE/.venv"
    python3 -m venv "$HERE/.venv"
fi
log "installing python/requirements.txt into .venv"
"$PY" -m pip install -q --disable-pip-version-check -r "$HERE/python/requirements.txt"

# --- 2. Build, versions, machine peak ---------------------------------------------------------
log "building the peers bench and machine_peak"
cargo bench --bench peers --no-run 2>&1 | tail -n 2 >&2
cargo build --release --bin machine_peak 2>&1 | tail -n 1 >&2

lockver() { awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock; }
"$PY" - "$RUN/versions.json" <<EOF
import json, sys, importlib.metadata as md, platform
v = {
    "rustc": "$(rustc --version | awk '{print $2}')",
    "candle-core": "$(lockver candle-core)",
    "candle-nn": "$(lockver candle-nn)",
    "burn": "$(lockver burn)",
    "criterion": "$(lockver criterion)",
    "python": platform.python_version(),
}
for p in ("jax", "jaxlib", "optax", "torch", "numpy"):
    v[p] = md.version(p)
json.dump(v, open(sys.argv[1], "w"))
EOF

log "measuring the FMA peak and the memory bandwidth"
"$HERE/target/release/machine_peak" --json "$RUN/machine.json" >/dev/null
log "GEMM on the workloads' shapes (gemm_probe)"
(cd "$REPO" && cargo run --release -q -p stategrad-simd --example gemm_probe) >"$RUN/gemm.md"

CRIT_ARGS=()
PY_ARGS=(--only W1,W2,W3,W4,W5,DIGITS)
MODE="full (criterion defaults for the digits group: 3 s warm-up, 5 s measurement; W1/W2/W5 groups 1 s / 3 s; Python default repetitions)"
if [[ $QUICK == 1 ]]; then
    CRIT_ARGS=(--warm-up-time 1 --measurement-time 3)
    PY_ARGS+=(--quick)
    MODE="quick (criterion --warm-up-time 1 --measurement-time 3; a tenth of the Python repetitions)"
fi

# --- 3. Rounds ----------------------------------------------------------------------------------
ROUND_TIMES=()
for r in $(seq 1 "$ROUNDS"); do
    R="$RUN/round$r"
    mkdir -p "$R"
    t0=$(date -u +%H:%M)
    rm -rf "$HERE/target/criterion"
    log "round $r: criterion (stategrad, burn at 1 and 2 threads; candle at 2)"
    env -u RAYON_NUM_THREADS -u CANDLE_NUM_THREADS RAYON_NUM_THREADS=2 \
        cargo bench --bench peers -- "${CRIT_ARGS[@]}" >"$R/criterion.log" 2>&1 \
        || { tail -n 30 "$R/criterion.log" >&2; exit 1; }
    log "round $r: criterion (candle at 1 thread)"
    env -u CANDLE_NUM_THREADS RAYON_NUM_THREADS=1 \
        cargo bench --bench peers -- "${CRIT_ARGS[@]}" candle >"$R/criterion-candle1.log" 2>&1 \
        || { tail -n 30 "$R/criterion-candle1.log" >&2; exit 1; }
    (cd "$HERE/target" && find criterion -path '*/new/estimates.json' -print0 \
        | xargs -0 -I{} cp --parents {} "$R/")
    for t in 1 2; do
        log "round $r: JAX at $t thread(s)"
        "$PY" python/jax_workloads.py --threads "$t" "${PY_ARGS[@]}" --json "$R/python.jsonl" \
            >>"$R/python.log" 2>&1 || { tail -n 30 "$R/python.log" >&2; exit 1; }
    done
    for t in 1 2; do
        log "round $r: PyTorch at $t thread(s)"
        "$PY" python/torch_workloads.py --threads "$t" "${PY_ARGS[@]}" --json "$R/python.jsonl" \
            >>"$R/python.log" 2>&1 || { tail -n 30 "$R/python.log" >&2; exit 1; }
    done
    ROUND_TIMES+=("\"round$r\": \"$t0–$(date -u +%H:%M) UTC\"")
done

# --- 4. Report ----------------------------------------------------------------------------------
ELAPSED=$(( $(date +%s) - START ))
ROUND_JSON=$(IFS=,; echo "${ROUND_TIMES[*]}")
cat >"$RUN/meta.json" <<EOF
{"date": "$DATE", "commit": "$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- . ':!benches/results' || echo '+changes')",
 "cpus": "$(nproc)", "mem": "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)",
 "mode": "$MODE", "elapsed": "$((ELAPSED / 60)) min $((ELAPSED % 60)) s", $ROUND_JSON}
EOF
mkdir -p "$REPO/benches/results"
OUTMD="$REPO/benches/results/peers-$DATE$([[ $QUICK == 1 ]] && echo -quick || true).md"
python3 "$HERE/report_all.py" "$RUN" >"$OUTMD"
cat "$OUTMD"
log "wrote $OUTMD (raw data: $RUN)"
if [[ $QUICK == 0 ]]; then
    # BENCHMARKS.md shows the latest full run between its markers (headings two levels down).
    python3 "$HERE/report_all.py" --splice "$REPO/BENCHMARKS.md" "$OUTMD"
    log "spliced $OUTMD into BENCHMARKS.md"
fi
