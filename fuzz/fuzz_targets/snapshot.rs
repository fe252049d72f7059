//! Feeds arbitrary bytes to the snapshot loader. `vm_core::snapshot::decode` must return `Ok` or
//! `Err` for every input; a snapshot that loads must encode to a file that loads to the same
//! state, and its values and actor states must rebuild.
//!
//! Each input is tried twice: as it is, and with its checksums made right again
//! (`snapshot::reseal`), so that mutations inside a section reach the body decoders and the
//! state verifier instead of stopping at the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use vm_core::snapshot::{Reader, decode, encode, reseal};

fuzz_target!(|data: &[u8]| {
    for bytes in [data.to_vec(), reseal(data)] {
        if let Ok(s) = decode(&bytes) {
            let again = encode(&s);
            let back = decode(&again).expect("a re-encoded snapshot loads");
            assert!(back.actors == s.actors, "re-encoding changed the actors");
            let specs = |s: &vm_core::snapshot::Snapshot| s.containers.iter().map(|c| c.spec.clone()).collect::<Vec<_>>();
            assert!(specs(&back) == specs(&s), "re-encoding changed the containers");
            let r = Reader::new(s.values.clone(), HashMap::new(), HashMap::new());
            for a in &s.actors {
                let _ = r.state(&a.state);
            }
        }
    }
});
