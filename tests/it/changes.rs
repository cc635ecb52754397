//! Change detection on push: a rewrite that keeps size and mtime (`cp -p`, `rsync -a`,
//! `touch -r`) is still a change (ctime and inode moved), `--rehash` reads everything, and a
//! file rewritten while it is read fails the push instead of recording bytes that never
//! existed together.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::checks;
use crate::data::{self, KIB, MIB};
use crate::harness::{array, boolean, only_target, pushed_snapshot, s, uint, Backend, Ctx};

per_backend!(
    restored_mtime_is_a_change,
    mirror_sees_a_restored_mtime,
    file_changing_while_read_fails_the_push
);

/// Rewrites `path` with `data` (same size) and puts its old mtime back, as `cp -p` would.
fn rewrite_keeping_mtime(path: &Path, data: &[u8]) {
    let before = fs::metadata(path).expect("stat");
    assert_eq!(before.len(), data.len() as u64, "the test keeps the size");
    let mtime = before.modified().expect("mtime");
    fs::write(path, data).expect("rewrite");
    let f = fs::File::options().write(true).open(path).expect("open");
    f.set_modified(mtime).expect("restore mtime");
    let after = fs::metadata(path).expect("stat");
    assert_eq!(after.modified().expect("mtime"), mtime);
    assert_eq!(after.len(), before.len());
}

pub fn restored_mtime_is_a_change(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::write_file(&src, "weights.bin", &data::random_bytes(1, 300 * KIB));
    data::write_file(&src, "config.json", b"{\"step\": 1}\n");
    let ferry = ctx.ferry();
    let args = ["push", s(&src), &repo.url, "--name", "ckpt"];
    let first = ferry.json(&args);

    // Same size, same mtime, other bytes.
    rewrite_keeping_mtime(&src.join("weights.bin"), &data::random_bytes(2, 300 * KIB));
    let second = ferry.json(&args);
    assert_eq!(uint(&second, "files_read"), 1, "{second}");
    assert_eq!(uint(&second, "files_unchanged"), 1, "{second}");
    assert!(
        !boolean(only_target(&second), "unchanged"),
        "the rewrite went unnoticed: {second}"
    );
    assert_ne!(pushed_snapshot(&first), pushed_snapshot(&second));
    checks::assert_restores(&ctx, &ferry, &repo.url, "ckpt", &src);

    // Another file renamed into place, with the old size and mtime: another inode.
    let weights = src.join("weights.bin");
    let other = ctx.path("other");
    fs::write(&other, data::random_bytes(3, 300 * KIB)).expect("write");
    fs::File::options()
        .write(true)
        .open(&other)
        .expect("open")
        .set_modified(fs::metadata(&weights).unwrap().modified().unwrap())
        .expect("set mtime");
    fs::rename(&other, &weights).expect("rename into place");
    let third = ferry.json(&args);
    assert_eq!(uint(&third, "files_read"), 1, "{third}");
    checks::assert_restores(&ctx, &ferry, &repo.url, "ckpt", &src);

    // Nothing changed: nothing is read, unless --rehash asks for it.
    let fourth = ferry.json(&args);
    assert_eq!(uint(&fourth, "files_read"), 0, "{fourth}");
    let mut rehash = args.to_vec();
    rehash.push("--rehash");
    let fifth = ferry.json(&rehash);
    assert_eq!(uint(&fifth, "files_read"), 2, "{fifth}");
    assert_eq!(uint(&fifth, "files_unchanged"), 0, "{fifth}");
    assert_eq!(uint(&fifth, "chunks_new"), 0, "{fifth}");
    assert!(boolean(only_target(&fifth), "unchanged"), "{fifth}");
    let log = checks::ref_log(&ferry, &repo.url, "ckpt");
    assert_eq!(log.len(), 3, "{log:?}");
}

/// A writer keeps rewriting one file (in place, and by shrinking and growing it) while the
/// push reads it: the push fails naming the file, no snapshot is written and the ref stays;
/// once the writer stops, the same push succeeds and restores byte-identical.
pub fn file_changing_while_read_fails_the_push(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::write_file(&src, "a-small.json", b"{\"step\": 1}\n");
    let size = 16 * MIB;
    data::write_file(&src, "b-busy.bin", &data::random_bytes(10, size));
    let ferry = ctx.ferry();
    let args = ["push", s(&src), &repo.url, "--name", "ckpt"];
    ferry.json(&args);
    let snapshots_before = repo.raw.list("snapshots/").len();

    let busy = src.join("b-busy.bin");
    let stop = AtomicBool::new(false);
    let failed = thread::scope(|scope| {
        let writer = scope.spawn(|| {
            use std::io::{Seek, SeekFrom, Write};
            let block = data::random_bytes(11, 64 * KIB);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut f = fs::File::options().write(true).open(&busy).expect("open");
                if i % 8 == 7 {
                    // Shrink, then grow back.
                    f.set_len(size as u64 / 2).expect("shrink");
                    f.set_len(size as u64).expect("grow");
                } else {
                    let at = (i * 64 * KIB as u64 * 37) % (size as u64 - 64 * KIB as u64);
                    f.seek(SeekFrom::Start(at)).expect("seek");
                    f.write_all(&block).expect("write");
                }
                i += 1;
                thread::sleep(Duration::from_micros(200));
            }
            i
        });
        // Three tries: each must fail (the writer never pauses for a whole read).
        let runs: Vec<_> = (0..3).map(|_| ferry.run(&args)).collect();
        stop.store(true, Ordering::Relaxed);
        let writes = writer.join().expect("writer");
        assert!(writes > 10, "the writer hardly ran ({writes} writes)");
        runs
    });
    for run in &failed {
        let line = run.error_line();
        assert!(
            line.contains("b-busy.bin") && line.contains("changed while it was being read"),
            "the push did not fail on the busy file: {run}"
        );
    }
    assert_eq!(
        repo.raw.list("snapshots/").len(),
        snapshots_before,
        "a failed push wrote a snapshot"
    );
    assert_eq!(checks::ref_log(&ferry, &repo.url, "ckpt").len(), 1);

    let settled = ferry.json(&args);
    assert!(!boolean(only_target(&settled), "unchanged"), "{settled}");
    checks::assert_restores(&ctx, &ferry, &repo.url, "ckpt", &src);
    let snaps = ferry.json(&["snapshots", &repo.url, "ckpt"]);
    assert_eq!(array(&snaps, "snapshots").len(), 2, "{snaps}");
}

/// `ferry mirror` too: a rewrite that keeps size and mtime is mirrored; `--rehash` reads
/// everything and writes nothing that did not change.
pub fn mirror_sees_a_restored_mtime(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    data::write_file(&src, "weights.bin", &data::random_bytes(41, 300 * KIB));
    data::write_file(&src, "config.json", b"{\"step\": 1}\n");
    let ferry = ctx.ferry();
    let args = ["mirror", s(&src), &dest.url];
    ferry.json(&args);
    let fresh = data::random_bytes(42, 300 * KIB);
    rewrite_keeping_mtime(&src.join("weights.bin"), &fresh);
    let second = ferry.json(&args);
    assert_eq!(uint(&second, "unchanged"), 1, "{second}");
    let written: u64 = ["created", "updated", "replaced", "adopted"]
        .iter()
        .map(|k| uint(&second, k))
        .sum();
    assert_eq!(written, 1, "the rewrite went unnoticed: {second}");
    assert_eq!(
        dest.raw.get("weights.bin"),
        fresh,
        "the mirror holds the old bytes"
    );
    let verify = ferry.json(&["verify", "--mirror", s(&src), &dest.url, "--read-data"]);
    assert!(boolean(&verify, "ok"), "{verify}");

    let mut rehash = args.to_vec();
    rehash.push("--rehash");
    let third = ferry.json(&rehash);
    assert_eq!(uint(&third, "unchanged"), 2, "{third}");
    assert_eq!(uint(&third, "bytes_sent"), 0, "{third}");
}
