//! vm-io: the only crate that touches the OS (sockets, files, timers, stdio).
