//! Fuzzes `RefEntry::decode`, the parser of `refs/<name>/<seq>` objects.
#![no_main]

use ferry::repo::{check_ref_name, RefEntry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = RefEntry::decode(data) {
        assert!(check_ref_name(&entry.name).is_ok());
    }
});
