//! Fuzz target: decoding arbitrary bytes as a changeset body never panics, and whatever decodes
//! re-encodes to a body that decodes to the same instructions.
#![no_main]

use eddy_core::changeset::{decode_changeset, encode_changeset, DecodeLimits};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok(instructions) = decode_changeset(data, &limits) {
        let body = encode_changeset(&instructions);
        let again = decode_changeset(&body, &limits).expect("a re-encoded changeset decodes");
        assert_eq!(again, instructions);
    }
});
