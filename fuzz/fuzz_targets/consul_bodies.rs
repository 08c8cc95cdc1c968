//! Fuzz target: `consul_dns::fuzzing::consul_bodies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| consul_dns::fuzzing::consul_bodies(data));
