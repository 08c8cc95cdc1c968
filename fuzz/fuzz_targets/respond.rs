//! Fuzz target: `consul_dns::fuzzing::respond`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| consul_dns::fuzzing::respond(data));
