//! Empty library: the benchmarks live in benches/peers.rs.
