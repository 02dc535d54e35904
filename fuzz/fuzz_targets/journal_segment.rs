#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tradsys::fuzz::journal_segment(data));
