//! Fuzz target: decoding arbitrary bytes as each kind of stored client record never panics, and
//! whatever decodes re-encodes to the same record.
#![no_main]

use eddy_core::changeset::DecodeLimits;
use eddy_core::client::persist::{
    decode_file_meta, decode_object, decode_pending, decode_schema, encode_file_meta,
    encode_object, encode_pending, encode_schema,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok(meta) = decode_file_meta(data, &limits) {
        let again = decode_file_meta(&encode_file_meta(&meta), &limits);
        assert_eq!(again.expect("a re-encoded file meta decodes"), meta);
    }
    if let Ok(changeset) = decode_pending(data, &limits) {
        let again = decode_pending(&encode_pending(&changeset), &limits);
        assert_eq!(again.expect("a re-encoded pending changeset decodes"), changeset);
    }
    if let Ok(object) = decode_object(data, &limits) {
        let record = encode_object(&object.collection, &object.key, &object.document);
        let again = decode_object(&record, &limits);
        assert_eq!(again.expect("a re-encoded object decodes"), object);
    }
    if let Ok(schema) = decode_schema(data, &limits) {
        let again = decode_schema(&encode_schema(&schema), &limits);
        assert_eq!(again.expect("a re-encoded schema decodes"), schema);
    }
});
