//! Dry runs (issue 14): `push --dry-run` and `replicate --dry-run` leave every store
//! byte-identical, and what they forecast is what the real run then sends, within 1 %: for a
//! first push, a delta-encoded second step, and a replication of both.

use crate::deltas::write_step;
use crate::harness::{boolean, number, only_target, s, string, uint, Backend, Ctx};
use crate::raw::{is_staging_name, Location};

per_backend!(
    dry_push_forecasts_what_is_sent,
    dry_replicate_forecasts_what_is_sent
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
    let dry = ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt", "--dry-run"]);
    let after = contents(repo);
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
