//! Request paths → the normalized path the router sees. The result is
//! absolute, free of `.` and `..` segments, and normalizing it again
//! changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = normalize(path) {
        assert!(p.starts_with('/'), "{path:?} -> {p:?}");
        assert!(
            !p.split('/').any(|s| s == ".." || s == "."),
            "{path:?} -> {p:?}"
        );
        assert_eq!(
            normalize(&p).as_deref(),
            Ok(&*p),
            "not idempotent: {path:?}"
        );
    }
});
