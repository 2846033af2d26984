//! Criterion benchmarks of mulproc across real processes (being written).
fn main() {}
