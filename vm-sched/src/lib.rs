//! vm-sched: the runtime. The only crate that spawns tasks.
