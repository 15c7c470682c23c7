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
/// set stays flat once the cache is full (each program kept was ~5 KB, forever).
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
}
