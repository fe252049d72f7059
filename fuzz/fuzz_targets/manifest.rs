//! Feeds arbitrary text to `vm up`'s manifest loader (`vm_sched::manifest::parse`): it must
//! answer `Ok` or a located `Err` for every input, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match vm_sched::manifest::parse(text, std::path::Path::new("/m")) {
            Ok(entries) => assert!(!entries.is_empty(), "a manifest that loads lists a container"),
            Err(e) => assert!(e.at.is_some() || e.path.is_some(), "an error without a location: {e}"),
        }
    }
});
