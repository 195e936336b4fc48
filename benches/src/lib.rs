//! Criterion benchmarks for Lumen; see `benches/methods.rs`. `LUMEN_BENCH_DEVICE` picks the device.
