//! Peak heap memory of the BENCHMARK-WORKLOADS.md workloads W2, W3, W4 and W6, built as
//! `benches/workloads.rs` builds them (`common/workloads.rs`), measured with a counting global
//! allocator (`common/peak_alloc.rs`). Prints a markdown table.
//!
//! Run: `cargo bench --bench peak_memory` (add `-- --out FILE` to also write the table to FILE).
//!
//! Each row: warm up with two calls (a jitted step is traced by the first), empty every thread's
//! pool of freed tensor buffers, then run one call and take the most heap bytes live at once
//! during it above those live before it. Emptying the pools first makes the figure what the
//! call needs, not what earlier calls happened to leave pooled; what the warm-up left held
//! (programs in a `jit` cache, the GEMM kernels' per-thread packing space) is the "kept" column.
//! "GEMM packing" is the peak of the allocations aligned to 16 bytes or more on their own (the
//! packing space of the products that allocate it per call; tensor buffers are aligned to 4).

#[path = "common/workloads.rs"]
mod defs;
#[path = "common/peak_alloc.rs"]
mod peak_alloc;

use defs::{tensor_bytes, W2, W3, W4, W6};
use peak_alloc::{live_bytes, peak_during, Peak};
use stategrad::prelude::*;
use stategrad::tensor::release_pooled_buffers;

struct Row {
    workload: &'static str,
    variant: &'static str,
    threads: usize,
    /// `None`: the default (an even split over the threads).
    chunk: Option<usize>,
    inputs: usize,
    output: usize,
    kept: usize,
    peak: Peak,
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("thread pool")
}

/// Every pool thread's buffers and this thread's: the pools are per thread.
fn release_pools(p: &rayon::ThreadPool) {
    p.broadcast(|_| release_pooled_buffers());
    release_pooled_buffers();
}

/// `(kept, peak, output bytes)` of `call` on the threads of `p`; `call` returns its output's
/// size and drops the output only after its return value is computed, so the output is in the
/// peak.
fn measure(p: &rayon::ThreadPool, call: impl Fn() -> usize + Sync) -> (usize, Peak, usize) {
    release_pools(p);
    let before = live_bytes();
    p.install(|| {
        call();
        call();
    });
    release_pools(p);
    let kept = live_bytes().saturating_sub(before);
    let (output, peak) = peak_during(|| p.install(&call));
    (kept, peak, output)
}

/// Pools of 1 and 2 threads, kept for the whole run: a pool's threads, when they exit, free
/// what they held (the `gemm` crate's per-thread packing slab among it), which would land in
/// whichever measurement is running then. Each thread first runs one large product, so that
/// its slab is in every baseline; returns the pools and the bytes that one product left held
/// per thread.
fn pools() -> (Vec<rayon::ThreadPool>, usize) {
    let a = Tensor::ones(&[256, 256]);
    let pools: Vec<_> = [1, 2].map(pool).into_iter().collect();
    let before = live_bytes();
    pools[0].broadcast(|_| drop(a.matmul(&a)));
    release_pools(&pools[0]);
    let slab = live_bytes().saturating_sub(before);
    pools[1].broadcast(|_| drop(a.matmul(&a)));
    release_pools(&pools[1]);
    (pools, slab)
}

fn bytes(b: usize) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / MIB)
    } else if b >= 1 << 10 {
        format!("{:.0} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this binary without `--bench`: nothing to check there.
    if !args.iter().any(|a| a == "--bench") {
        println!("peak_memory: run with `cargo bench --bench peak_memory`");
        return;
    }
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1).cloned());

    let (pools, slab) = pools();
    let on = |threads: usize| &pools[threads - 1];
    let mut rows = Vec::new();

    let w2 = W2::new();
    w2.check();
    let w2_in = w2.input_bytes();
    let step = |xy: (Tensor, Tensor)| w2.step(xy);
    for threads in [1, 2] {
        let (kept, peak, output) = measure(on(threads), || tensor_bytes(&step(w2.xy()).unwrap()));
        rows.push(Row {
            workload: "W2 MLP step b256",
            variant: "eager",
            threads,
            chunk: None,
            inputs: w2_in,
            output,
            kept,
            peak,
        });
        let jstep = jit(step);
        let (kept, peak, output) =
            measure(on(threads), || tensor_bytes(&jstep.call(w2.xy()).unwrap()));
        rows.push(Row {
            workload: "W2 MLP step b256",
            variant: "jit",
            threads,
            chunk: None,
            inputs: w2_in,
            output,
            kept,
            peak,
        });
    }

    let w3 = W3::new(256);
    w3.check();
    let f = |x: Tensor| w3.f(x);
    let w3_in = w3.input_bytes();
    let chunked = |n: usize| [None, Some(8), Some(32), Some(128), Some(n)];
    for (variant, fwd) in [("jacrev", false), ("jacfwd", true)] {
        for (threads, chunk) in [(2, None)]
            .into_iter()
            .chain(chunked(256).into_iter().map(|c| (1, c)))
        {
            let (kept, peak, output) = measure(on(threads), || {
                let t = if fwd { jacfwd(f) } else { jacrev(f) };
                let t = match chunk {
                    Some(c) => t.chunk_size(c),
                    None => t,
                };
                tensor_bytes(&t.call(w3.x.clone()).unwrap())
            });
            rows.push(Row {
                workload: "W3 Jacobian 256",
                variant,
                threads,
                chunk,
                inputs: w3_in,
                output,
                kept,
                peak,
            });
        }
    }

    let w4 = W4::new(512);
    w4.check();
    let f = |x: Tensor| w4.f(x);
    let w4_in = w4.input_bytes();
    for (threads, chunk) in [(2, None)]
        .into_iter()
        .chain(chunked(512).into_iter().map(|c| (1, c)))
    {
        let (kept, peak, output) = measure(on(threads), || {
            let t = match chunk {
                Some(c) => hessian(f).chunk_size(c),
                None => hessian(f),
            };
            tensor_bytes(&t.call(w4.x.clone()).unwrap())
        });
        rows.push(Row {
            workload: "W4 Hessian 512",
            variant: "hessian",
            threads,
            chunk,
            inputs: w4_in,
            output,
            kept,
            peak,
        });
    }

    let w6 = W6::new();
    w6.check();
    let w6_in = w6.input_bytes();
    for threads in [1, 2] {
        let (kept, peak, output) = measure(on(threads), || {
            let pe = vmap(|xy| w6.example_grad(xy)).call(w6.xy()).unwrap();
            pe.values().map(tensor_bytes).sum()
        });
        rows.push(Row {
            workload: "W6 per-example grads b64",
            variant: "vmap_grad",
            threads,
            chunk: None,
            inputs: w6_in,
            output,
            kept,
            peak,
        });
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mut table = format!(
        "Peak heap memory, `cargo bench --bench peak_memory`, on {} ({} threads available)\n\n",
        cpu,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let columns = [
        "workload",
        "variant",
        "threads",
        "chunk_size",
        "inputs",
        "output",
        "kept between calls",
        "peak during a call",
        "GEMM packing peak",
        "peak / output",
    ];
    table += &format!("| {} |\n", columns.join(" | "));
    table += &format!("|{}\n", "---|".repeat(columns.len()));
    for r in &rows {
        table += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.variant,
            r.threads,
            r.chunk.map_or("default".to_string(), |c| c.to_string()),
            bytes(r.inputs),
            bytes(r.output),
            bytes(r.kept),
            bytes(r.peak.total),
            bytes(r.peak.aligned),
            // A loss of 4 bytes is no yardstick.
            if r.output >= 1 << 10 {
                format!("{:.1}", r.peak.total as f64 / r.output as f64)
            } else {
                "–".to_string()
            },
        );
    }
    table += &format!(
        "\nEvery thread that has run a large product also keeps the `gemm` crate's packing slab: \
         {} per thread, in the baseline of every row.\n",
        bytes(slab)
    );
    print!("{table}");
    if let Some(path) = out {
        std::fs::write(&path, &table).expect("write the table");
        eprintln!("written to {path}");
    }
}
