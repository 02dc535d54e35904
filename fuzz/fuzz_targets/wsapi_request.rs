#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tradsys::fuzz::wsapi_request(data));
