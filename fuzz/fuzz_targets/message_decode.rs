//! Fuzzes the protocol message decoder: arbitrary frames, decoded as client and as server
//! messages with the default limits, must never panic, and whatever decodes must re-encode to a
//! frame that decodes to the same message (and, as decoding is canonical, to the same bytes).
#![no_main]

use eddy_core::protocol::{
    decode_client_message, decode_server_message, encode_client_message, encode_server_message,
    MessageLimits,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = MessageLimits::default();
    if let Ok(msg) = decode_client_message(data, &limits) {
        let bytes = encode_client_message(&msg);
        assert_eq!(decode_client_message(&bytes, &limits).as_ref(), Ok(&msg));
        assert_eq!(bytes, data);
    }
    if let Ok(msg) = decode_server_message(data, &limits) {
        let bytes = encode_server_message(&msg);
        assert_eq!(decode_server_message(&bytes, &limits).as_ref(), Ok(&msg));
        assert_eq!(bytes, data);
    }
});
