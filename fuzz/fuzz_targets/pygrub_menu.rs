#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xenkvm_fuzz::pygrub_menu(data));
