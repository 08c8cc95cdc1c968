//! Fuzz target: `consul_dns::fuzzing::persisted_state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| consul_dns::fuzzing::persisted_state(data));
