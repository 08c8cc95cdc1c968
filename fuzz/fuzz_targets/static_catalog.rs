//! Fuzz target: `consul_dns::fuzzing::static_catalog`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| consul_dns::fuzzing::static_catalog(data));
