//! The standard library: assembly files shipped inside the binary.
//!
//! 1. `.include "std/NAME.vasm"` names a file of this library from any directory: the include
//!    path is not resolved against the including file and the loader is not asked, so there is
//!    no install path to configure. Paths starting with `std/` are reserved for it.
//! 2. The files are compiled in (`include_str!` of `vm-core/std/`), so the library is exactly
//!    the one the binary was built with; a diagnostic in one names it `std/NAME.vasm`.

/// The shipped files, by include path.
const FILES: &[(&str, &str)] = &[
    ("std/list.vasm", include_str!("../../std/list.vasm")),
    ("std/server.vasm", include_str!("../../std/server.vasm")),
    ("std/supervisor.vasm", include_str!("../../std/supervisor.vasm")),
];

/// The text of the library file `path` names, if it names one.
pub fn file(path: &str) -> Option<&'static str> {
    FILES.iter().find(|(name, _)| *name == path).map(|(_, text)| *text)
}

/// True if `path` is in the library's reserved namespace (`std/...`).
pub fn reserved(path: &str) -> bool {
    path.starts_with("std/")
}

/// The include paths of every shipped file.
pub fn names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(name, _)| *name)
}
