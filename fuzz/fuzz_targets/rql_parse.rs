//! Fuzz target: parsing arbitrary UTF-8 as RQL never panics, and every query that parses prints
//! as canonical text that parses back to an equal query.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = eddy_core::query::parse(text) {
        let canonical = query.to_string();
        match eddy_core::query::parse(&canonical) {
            Ok(reparsed) => assert_eq!(reparsed, query, "{canonical}"),
            Err(err) => panic!("canonical text {canonical:?} does not parse: {err}"),
        }
    }
});
