//! vm-cli: the `vm` command line. The only crate that prints.
