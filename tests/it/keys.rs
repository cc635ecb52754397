//! Client-side encryption keys (issue 15): `ferry key generate` writes a new owner-only key
//! file, prints its id and never its bytes, and never overwrites a file.

use crate::harness::{s, string, Backend, Ctx};

#[test]
fn key_generate_writes_an_owner_only_file_once() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let path = ctx.path("repo.key");
    let ferry = ctx.ferry();
    let report = ferry.json(&["key", "generate", s(&path)]);
    assert_eq!(string(&report, "path"), s(&path), "{report}");
    let id = string(&report, "key_id");
    assert_eq!(id.len(), 32, "{report}");
    let text = std::fs::read_to_string(&path).expect("the key file");
    let digits = text
        .trim()
        .strip_prefix("ferry-key-1:")
        .unwrap_or_else(|| panic!("not a key file: {} bytes", text.len()));
    assert_eq!(digits.len(), 64);
    assert!(!report.to_string().contains(digits), "the key was printed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    let again = ferry.run(&["key", "generate", s(&path)]);
    assert!(!again.status.success(), "{again}");
    assert!(
        again.error_line().contains("already exists") && again.error_line().contains(s(&path)),
        "{again}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("the key file"),
        text,
        "the key file was overwritten"
    );
}
