//! Memory of a long-running process that jits many shapes, alone in its test binary (it reads
//! the process's resident set size, which tests running beside it would disturb).

use stategrad::jit;
use stategrad::prelude::*;

fn rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

/// 10,000 distinct argument shapes keep at most `DEFAULT_CACHE_LIMIT` programs, and the resident
/// set stays flat once the cache is full (each program kept was ~5 KB, forever); then 10^6 steps
/// of a jitted training step leave it flat too. One test: the two must not run side by side.
#[test]
fn jitting_ten_thousand_shapes_stays_within_a_memory_bound() {
    let g = jit(|x: Tensor| (&x * 3.0 - 1.0).sum());
    for n in 1..=1_000 {
        g.call(Tensor::ones(&[n])).unwrap();
    }
    let before = rss_kb();
    for n in 1_001..=10_000 {
        g.call(Tensor::ones(&[n])).unwrap();
    }
    assert_eq!(g.trace_count(), 10_000);
    assert_eq!(g.cache_len(), stategrad::jit::DEFAULT_CACHE_LIMIT);
    if let (Some(a), Some(b)) = (before, rss_kb()) {
        // 9,000 more programs kept would be ~45 MB.
        assert!(b < a + 8 * 1024, "RSS grew from {a} KB to {b} KB");
        eprintln!("RSS after 1,000 shapes {a} KB, after 10,000 {b} KB");
    }

    // A training step (the seed's linear regression) replayed 10^6 times.
    let w = ParamState::new(Tensor::zeros(&[3, 1]));
    let b = ParamState::new(Tensor::zeros(&[1]));
    let x = Tensor::new([[1.0f32, 2.0, 3.0], [0.5, -1.0, 2.0]]);
    let y = Tensor::new([[1.0f32], [2.0]]);
    let step = jit(|(x, y): (Tensor, Tensor)| {
        let loss =
            |(x, y): (Tensor, Tensor)| (x.matmul(&w.value()) + b.value() - y).square().mean();
        let (g, l) = grad(loss)
            .grad_states((w.clone(), b.clone()))
            .return_value()
            .call((x, y))?;
        w.set_value(w.value() - g.0 * 0.01);
        b.set_value(b.value() - g.1 * 0.01);
        Ok(l)
    });
    // Past the switch to native code (a one-time allocation of the code generator's memory).
    for _ in 0..2 * stategrad::exec::tuning::arena_native_after_runs() {
        step.call((x.clone(), y.clone())).unwrap();
    }
    let before = rss_kb();
    for _ in 0..1_000_000 {
        step.call((x.clone(), y.clone())).unwrap();
    }
    assert_eq!(step.trace_count(), 1);
    if let (Some(a), Some(b)) = (before, rss_kb()) {
        assert!(
            b < a + 1024,
            "RSS grew from {a} KB to {b} KB over 10^6 steps"
        );
        eprintln!("RSS before 10^6 steps {a} KB, after {b} KB");
    }
}
