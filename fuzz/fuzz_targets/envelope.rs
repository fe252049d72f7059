//! Network envelopes are untrusted input: decoding arbitrary bytes must return (never panic or
//! over-allocate), and whatever decodes must re-encode to the same signal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vm_dist::fuzz_envelope(data);
});
