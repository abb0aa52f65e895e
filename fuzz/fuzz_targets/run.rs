//! libFuzzer target: the run reader under the contract of tests/fuzz_readers/targets.rs.
#![no_main]

#[allow(dead_code)] // each target uses one of the shared targets
#[path = "../../tests/fuzz_readers/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|input: &[u8]| targets::fuzz_one(&targets::RUN, input));
