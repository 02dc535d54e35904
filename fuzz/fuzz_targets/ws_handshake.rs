#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tradsys::fuzz::ws_handshake(data));
