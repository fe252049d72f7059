//! Benchmarks live in `benches/benches/`; programs in `benches/programs/`.
