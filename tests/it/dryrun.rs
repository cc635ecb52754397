//! Dry runs (issue 14): `push --dry-run`, `replicate --dry-run` and `pull --dry-run` leave
//! every store (and a pull's folder) byte-identical, and what they forecast is what the real
//! run then sends or reads, within 1 %: for a first push, a delta-encoded second step, a
//! replication of both, and pulls of both.

use std::path::Path;

use crate::deltas::write_step;
use crate::harness::{boolean, number, only_target, s, string, uint, Backend, Ctx};
use crate::raw::{is_staging_name, Location};

per_backend!(
    dry_push_forecasts_what_is_sent,
    dry_replicate_forecasts_what_is_sent,
    dry_pull_forecasts_what_is_read,
);

/// Every object of a location: key, size and bytes, sorted by key.
fn contents(loc: &Location) -> Vec<(String, u64, Vec<u8>)> {
    let objects: Vec<_> = loc
        .raw
        .list("")
        .into_iter()
        .filter(|o| !is_staging_name(&o.key))
        .collect();
    let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    let bodies = loc.raw.get_many(&keys);
    objects
        .into_iter()
        .zip(bodies)
        .map(|(o, b)| (o.key, o.size, b))
        .collect()
}

fn total(c: &[(String, u64, Vec<u8>)]) -> u64 {
    c.iter().map(|o| o.1).sum()
}

/// `forecast` is within 1 % of `real` (both non-zero).
fn within_one_percent(what: &str, forecast: u64, real: u64) {
    assert!(real > 0, "{what}: the real run sent nothing");
    let off = forecast.abs_diff(real) as f64 / real as f64;
    eprintln!("{what}: forecast {forecast}, real {real}");
    assert!(
        off <= 0.01,
        "{what}: forecast {forecast} vs real {real} ({:.2} % off)",
        off * 100.0
    );
}

/// The dry run's single target forecast.
fn forecast(dry: &serde_json::Value) -> &serde_json::Value {
    let d = dry
        .get("dry_run")
        .unwrap_or_else(|| panic!("no dry_run: {dry}"));
    assert!(boolean(d, "estimate"), "{d}");
    let t = d["targets"].as_array().expect("targets");
    assert_eq!(t.len(), 1, "{d}");
    &t[0]
}

/// A dry push, then the real one, of `step` from `src` into `repo`: the store is unchanged by
/// the dry run, and its forecast matches what the real run wrote. Returns both reports.
fn dry_then_real(ctx: &Ctx, repo: &Location, step: u32) -> (serde_json::Value, serde_json::Value) {
    let src = ctx.dir(&format!("step-{step}"));
    write_step(&src, step);
    let ferry = ctx.ferry();
    let before = contents(repo);
    let cache_before = crate::base_cache::cache_bytes(ctx.index_dir()).1;
    let dry = ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt", "--dry-run"]);
    let after = contents(repo);
    assert_eq!(
        crate::base_cache::cache_bytes(ctx.index_dir()).1,
        cache_before,
        "step {step}: a dry push wrote the local base cache"
    );
    assert!(
        before == after,
        "step {step}: a dry push changed the store: {:?} → {:?}",
        before.iter().map(|o| (&o.0, o.1)).collect::<Vec<_>>(),
        after.iter().map(|o| (&o.0, o.1)).collect::<Vec<_>>()
    );
    let real = ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    let grown = total(&contents(repo)) - total(&before);
    let f = forecast(&dry);
    within_one_percent(
        &format!("step {step}, all bytes"),
        uint(f, "bytes_total"),
        grown,
    );
    within_one_percent(
        &format!("step {step}, bytes_uploaded"),
        uint(&dry, "bytes_uploaded"),
        uint(&real, "bytes_uploaded"),
    );
    assert_eq!(
        uint(f, "bytes_packs"),
        uint(only_target(&dry), "bytes_uploaded")
    );
    assert_eq!(
        uint(&dry, "chunks_delta"),
        uint(&real, "chunks_delta"),
        "{dry}\n{real}"
    );
    // A local source is an upload: free, and said to be an estimate from the default table.
    assert_eq!(string(&f["price"], "from_cloud"), "local", "{f}");
    assert_eq!(string(&f["price"], "basis"), "default", "{f}");
    assert_eq!(number(f, "usd"), 0.0, "{f}");
    (dry, real)
}

/// A first push and a delta-encoded second step, each dry then real; then a dry run of a
/// step already pushed forecasts no pack, and a priced one uses the flag's price.
pub fn dry_push_forecasts_what_is_sent(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "2"]);
    dry_then_real(&ctx, &repo, 1);
    let (dry, real) = dry_then_real(&ctx, &repo, 2);
    assert!(
        uint(&real, "chunks_delta") >= 3,
        "step 2 is delta-encoded: {real}"
    );
    assert_eq!(
        uint(&dry, "bytes_saved_by_deltas"),
        uint(&real, "bytes_saved_by_deltas"),
        "{dry}\n{real}"
    );

    // Nothing new: nothing to send, the ref stays.
    let src = ctx.dir("again");
    write_step(&src, 2);
    let before = contents(&repo);
    let args = ["push", s(&src), &repo.url, "--name", "ckpt", "--dry-run"];
    let again = ferry.json(&[&args[..], &["--price-per-gib", "0.5"]].concat());
    assert!(before == contents(&repo), "a dry push changed the store");
    let f = forecast(&again);
    assert_eq!(uint(f, "bytes_packs"), 0, "{again}");
    assert_eq!(uint(&again, "bytes_uploaded"), 0, "{again}");
    // The file was written anew (another mtime): a new snapshot and ref entry, no packs.
    assert!(!boolean(only_target(&again), "unchanged"), "{again}");
    assert!(
        uint(f, "bytes_snapshots") > 0 && uint(f, "bytes_refs") > 0,
        "{f}"
    );
    assert_eq!(string(&f["price"], "basis"), "flag", "{f}");
    assert_eq!(number(&f["price"], "usd_per_gib"), 0.5, "{f}");
}

/// Two delta steps in a file repository replicated into `backend`: the dry replication
/// writes nothing to either side and forecasts the bytes the real one sends.
pub fn dry_replicate_forecasts_what_is_sent(backend: Backend) {
    let Some(ctx) = Ctx::new(&[Backend::File, backend]) else {
        return;
    };
    let a = ctx.location(Backend::File);
    let b = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &a.url, "--deltas", "2"]);
    for step in 1..=2 {
        let src = ctx.dir(&format!("step-{step}"));
        write_step(&src, step);
        ferry.json(&["push", s(&src), &a.url, "--name", "ckpt"]);
    }
    let (a_before, b_before) = (contents(&a), contents(&b));
    let dry = ferry.json(&["replicate", &a.url, &b.url, "--dry-run"]);
    assert!(
        a_before == contents(&a),
        "a dry replication changed its source"
    );
    assert!(
        b_before == contents(&b),
        "a dry replication changed its target"
    );
    let real = ferry.json(&["replicate", &a.url, &b.url]);
    let grown = total(&contents(&b)) - total(&b_before);
    let f = forecast(&dry);
    within_one_percent("replicate, all bytes", uint(f, "bytes_total"), grown);
    within_one_percent(
        "replicate, bytes_uploaded",
        uint(&dry, "bytes_uploaded"),
        uint(&real, "bytes_uploaded"),
    );
    for key in [
        "snapshots_copied",
        "chunks_copied",
        "refs_advanced",
        "bytes_downloaded",
    ] {
        assert_eq!(uint(&dry, key), uint(&real, key), "{key}: {dry}\n{real}");
    }
    assert!(
        uint(f, "bytes_config") > 0,
        "the target would be created: {f}"
    );

    let again = ferry.json(&["replicate", &a.url, &b.url, "--dry-run"]);
    assert_eq!(uint(forecast(&again), "bytes_total"), 0, "{again}");
}

/// Every file and link under `dir` (relative path, contents or link target), sorted.
fn local_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.map(Result::unwrap) {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.push((rel, target.display().to_string().into_bytes()));
            } else if meta.is_dir() {
                out.push((rel + "/", Vec::new()));
                stack.push(p);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Step 1 pulled for real; a dry pull of step 2 (a delta step) changes nothing in DIR or the
/// store and forecasts what the real pull then reads from the store; a dry pull into a
/// folder that does not exist creates nothing and prices the download out of the cloud.
pub fn dry_pull_forecasts_what_is_read(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "2"]);
    for step in 1..=2 {
        let src = ctx.dir(&format!("step-{step}"));
        write_step(&src, step);
        ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    }
    let fresh = ctx.path("nowhere");
    let first = ferry.json(&["pull", &repo.url, "ckpt@1", s(&fresh), "--dry-run"]);
    assert!(!fresh.exists(), "a dry pull created {}", fresh.display());
    let f = forecast(&first);
    assert!(uint(&first, "bytes_read_from_store") > 0, "{first}");
    assert_eq!(
        uint(f, "bytes_total"),
        uint(&first, "bytes_read_from_store")
    );
    let want_cloud = match backend {
        Backend::File => "local",
        Backend::S3 => "aws",
        Backend::Azure => "azure",
        Backend::Gcs => "gcp",
    };
    assert_eq!(string(&f["price"], "from_cloud"), want_cloud, "{f}");
    assert_eq!(number(f, "usd") > 0.0, backend != Backend::File, "{f}");

    let dir = ctx.path("serve");
    let real1 = ferry.json(&["pull", &repo.url, "ckpt@1", s(&dir)]);
    within_one_percent(
        "pull step 1",
        uint(&first, "bytes_read_from_store"),
        uint(&real1, "bytes_read_from_store"),
    );
    let (local, store) = (local_tree(&dir), contents(&repo));
    let dry = ferry.json(&["pull", &repo.url, "ckpt", s(&dir), "--dry-run"]);
    assert!(local == local_tree(&dir), "a dry pull changed DIR");
    assert!(store == contents(&repo), "a dry pull changed the store");
    let real = ferry.json(&["pull", &repo.url, "ckpt", s(&dir)]);
    assert!(
        uint(&real, "delta_bases_reused") > 0,
        "a delta step over step 1: {real}"
    );
    within_one_percent(
        "pull step 2",
        uint(&dry, "bytes_read_from_store"),
        uint(&real, "bytes_read_from_store"),
    );
    for key in [
        "chunks_fetched",
        "chunks_reused",
        "bytes_reused",
        "delta_bases_reused",
    ] {
        assert_eq!(uint(&dry, key), uint(&real, key), "{key}: {dry}\n{real}");
    }
}
