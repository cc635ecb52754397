//! Fuzzes `RepoConfig::decode`, the parser of a repository's `config` object.
#![no_main]

use ferry::repo::config::RepoConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = RepoConfig::decode(data) {
        // What decodes must survive its own round trip.
        let again = RepoConfig::decode(&cfg.encode()).expect("an accepted config re-decodes");
        assert_eq!(again, cfg);
    }
});
