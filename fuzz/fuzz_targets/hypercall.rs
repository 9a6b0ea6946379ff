#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenkvm_fuzz::hypercall(data));
