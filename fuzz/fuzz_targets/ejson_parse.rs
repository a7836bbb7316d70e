//! Fuzz target: parsing arbitrary UTF-8 as EJSON never panics, and whatever parses survives a
//! round trip through canonical and relaxed EJSON.
#![no_main]

use eddy_core::value::{parse_ejson, EjsonMode, Value};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = parse_ejson(text) {
        for mode in [EjsonMode::Canonical, EjsonMode::Relaxed] {
            let json = value.to_ejson(mode);
            let again = Value::from_ejson(&json).expect("emitted EJSON parses");
            assert_eq!(again, value);
        }
    }
});
