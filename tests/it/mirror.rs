//! `ferry mirror`: plain objects at the destination, byte-identical to the source, read back
//! by an independent client (rawstore.py: plain signed GETs). A changed middle costs only its
//! bytes on S3 and Azure (measured by a counting proxy between ferry and the server); an
//! object changed behind ferry's back is replaced; a killed mirror leaves the previous object
//! whole and the rerun completes.

use std::path::Path;

use serde_json::Value;

use crate::daemon::write_config;
use crate::data::{self, MIB};
use crate::harness::{
    array, s, server_url, uint, Backend, Ctx, AZURITE_URL_VAR, GCS_URL_VAR, S3_ENDPOINT_VAR,
};
use crate::proxy::Proxy;
use crate::raw::Location;
use crate::run::Ferry;

per_backend!(
    changed_middle_costs_only_its_bytes,
    object_changed_behind_ferrys_back_is_replaced,
    killed_mirror_keeps_the_previous_object,
    sync_runs_a_mirror_job,
    a_lost_index_costs_no_resend,
    odd_names_are_mirrored_as_they_are,
    source_changing_mid_mirror_is_not_committed,
    delete_spares_symlinks_and_refuses_an_empty_source
);

const MODEL: &str = "model.safetensors";

/// A safetensors file of `tensors` F32 tensors of `tensor_bytes` each, random contents.
fn safetensors(seed: u64, tensors: usize, tensor_bytes: usize) -> Vec<u8> {
    let mut header = String::from("{");
    for t in 0..tensors {
        if t > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"layer{t}.weight\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            tensor_bytes / 4,
            t * tensor_bytes,
            (t + 1) * tensor_bytes
        ));
    }
    header.push('}');
    while (8 + header.len()) % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + tensors * tensor_bytes);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data::random_bytes(seed, tensors * tensor_bytes));
    out
}

/// The server a backend's objects live on, for a proxy to stand in front of.
pub(crate) fn upstream(backend: Backend) -> Option<(&'static str, String)> {
    match backend {
        Backend::File => None,
        Backend::S3 => Some(("AWS_ENDPOINT", server_url(S3_ENDPOINT_VAR)?)),
        Backend::Azure => Some(("AZURITE_BLOB_STORAGE_URL", server_url(AZURITE_URL_VAR)?)),
        Backend::Gcs => Some(("GOOGLE_BASE_URL", server_url(GCS_URL_VAR)?)),
    }
}

/// Runs `ferry mirror` (through `proxy` when given) and returns its JSON report.
fn mirror(ferry: &Ferry, src: &Path, dest: &Location, proxy: Option<(&str, &Proxy)>) -> Value {
    let args = ["mirror", s(src), &dest.url];
    match proxy {
        Some((var, p)) => ferry.run_env(&args, &[(var, &p.url)]).json(),
        None => ferry.json(&args),
    }
}

fn action_of<'a>(report: &'a Value, path: &str) -> &'a str {
    array(report, "actions")
        .iter()
        .find(|a| a["path"] == path)
        .and_then(|a| a["action"].as_str())
        .unwrap_or_else(|| panic!("no action for {path} in {report}"))
}

fn assert_object(dest: &Location, key: &str, expected: &[u8]) {
    let got = dest.raw.get(key);
    assert!(
        got == expected,
        "{key}: the destination holds {} bytes that differ from the source's {}",
        got.len(),
        expected.len()
    );
}

pub fn changed_middle_costs_only_its_bytes(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    let mut model = safetensors(11, 9, 10_000_000);
    data::write_file(&src, MODEL, &model);
    data::write_file(&src, "config.json", b"{\"hidden\": 4096}");
    data::write_file(&src, "tok/vocab.txt", &data::text_bytes(3, 300_000));
    let ferry = ctx.ferry();
    let up = upstream(backend);
    let proxy = up.as_ref().map(|(_, url)| Proxy::start(url, None));
    let via = up.as_ref().zip(proxy.as_ref()).map(|((v, _), p)| (*v, p));

    let first = mirror(&ferry, &src, &dest, via);
    assert_eq!(uint(&first, "created"), 3, "{first}");
    assert_object(&dest, MODEL, &model);
    assert_object(&dest, "tok/vocab.txt", &data::text_bytes(3, 300_000));
    let first_sent = proxy.as_ref().map(Proxy::sent).unwrap_or(0);

    // Unchanged: nothing read, nothing sent but the listing.
    proxy.as_ref().map(Proxy::reset);
    let again = mirror(&ferry, &src, &dest, via);
    assert_eq!(uint(&again, "unchanged"), 3, "{again}");
    assert_eq!(uint(&again, "bytes_sent"), 0, "{again}");
    if let Some(p) = &proxy {
        assert!(
            p.sent() < 16 * 1024,
            "an unchanged mirror sent {} bytes",
            p.sent()
        );
    }

    // The middle 15 % changes.
    let (a, b) = (model.len() * 425 / 1000, model.len() * 575 / 1000);
    let fresh = data::random_bytes(12, b - a);
    model[a..b].copy_from_slice(&fresh);
    data::write_file(&src, MODEL, &model);
    proxy.as_ref().map(Proxy::reset);
    let delta = mirror(&ferry, &src, &dest, via);
    assert_object(&dest, MODEL, &model);
    let size = model.len() as u64;
    let sent = uint(&delta, "bytes_sent");
    let on_wire = proxy.as_ref().map(Proxy::sent).unwrap_or(sent);
    eprintln!(
        "mirror {backend:?}: first {first_sent} B on the wire; delta of a {size} B file: \
         {sent} B payload, {on_wire} B on the wire ({:.1} %)",
        on_wire as f64 * 100.0 / size as f64
    );
    assert_eq!(uint(&delta, "unchanged"), 2, "{delta}");
    let limit_pct = match backend {
        // No native delta: the changed file is written whole (GCS compose joins whole
        // objects only).
        Backend::File | Backend::Gcs => {
            assert_eq!(action_of(&delta, MODEL), "replace", "{delta}");
            return;
        }
        Backend::Azure => 30,
        Backend::S3 => 40,
    };
    assert_eq!(action_of(&delta, MODEL), "update", "{delta}");
    assert!(
        sent >= (b - a) as u64,
        "sent {sent} < the {} B changed",
        b - a
    );
    assert!(
        on_wire * 100 <= size * limit_pct,
        "{on_wire} B on the wire for a {size} B file: over {limit_pct} %"
    );
    assert!(uint(&delta, "bytes_kept") > size / 2, "{delta}");

    let verify = ferry.json(&["verify", "--mirror", s(&src), &dest.url]);
    assert_eq!(uint(&verify, "matched"), 3, "{verify}");
    let verify = ferry.json(&["verify", "--mirror", s(&src), &dest.url, "--read-data"]);
    assert_eq!(uint(&verify, "matched"), 3, "{verify}");
    // An object with the right metadata but other bytes: only --read-data sees it.
    let mut forged = model.clone();
    forged[1000] ^= 1;
    let hex = blake3::hash(&model).to_hex().to_string();
    dest.raw.forge(MODEL, &forged, &hex);
    let meta_only = ferry.json(&["verify", "--mirror", s(&src), &dest.url]);
    assert_eq!(uint(&meta_only, "matched"), 3, "{meta_only}");
    let bad = ferry.run(&["verify", "--mirror", s(&src), &dest.url, "--read-data"]);
    assert!(
        !bad.status.success(),
        "verify --read-data passed a forged object"
    );
    assert!(bad.stdout.contains("its bytes hash to"), "{}", bad.stdout);
    dest.raw.put(MODEL, &model);
    // verify --mirror notices an object that no longer matches its source.
    model[0] ^= 1;
    data::write_file(&src, MODEL, &model);
    let bad = ferry.run(&["verify", "--mirror", s(&src), &dest.url]);
    assert!(!bad.status.success(), "verify passed a mismatching object");
}

pub fn object_changed_behind_ferrys_back_is_replaced(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    let v1 = data::random_bytes(21, 12 * MIB);
    data::write_file(&src, "w.bin", &v1);
    let ferry = ctx.ferry();
    mirror(&ferry, &src, &dest, None);
    assert_object(&dest, "w.bin", &v1);

    // Someone else rewrites the object; the source is unchanged.
    let foreign = data::random_bytes(22, 12 * MIB);
    dest.raw.put("w.bin", &foreign);
    let r = mirror(&ferry, &src, &dest, None);
    assert_eq!(action_of(&r, "w.bin"), "replace", "{r}");
    assert_object(&dest, "w.bin", &v1);

    // Someone else rewrites it again, and the source changes a little: the delta must not
    // trust the foreign object's bytes.
    let mut v2 = v1.clone();
    v2[6 * MIB..6 * MIB + 1000].fill(7);
    data::write_file(&src, "w.bin", &v2);
    let mut tampered = v1.clone();
    tampered[MIB..2 * MIB].fill(0xAA);
    dest.raw.put("w.bin", &tampered);
    let r = mirror(&ferry, &src, &dest, None);
    assert_eq!(action_of(&r, "w.bin"), "replace", "{r}");
    assert_object(&dest, "w.bin", &v2);
    let verify = ferry.json(&["verify", "--mirror", s(&src), &dest.url]);
    assert_eq!(uint(&verify, "matched"), 1, "{verify}");
}

pub fn killed_mirror_keeps_the_previous_object(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    let v1 = data::random_bytes(31, 24 * MIB);
    data::write_file(&src, "big.bin", &v1);
    let ferry = ctx.ferry();
    mirror(&ferry, &src, &dest, None);
    let mut v2 = v1.clone();
    v2[8 * MIB..16 * MIB].copy_from_slice(&data::random_bytes(32, 8 * MIB));
    data::write_file(&src, "big.bin", &v2);

    // Kill the mirror while it sends (the proxy paces it to ~4 MB/s; local folders are
    // written at disk speed, so kill early).
    let up = upstream(backend);
    let proxy = up
        .as_ref()
        .map(|(_, url)| Proxy::start(url, Some(4_000_000)));
    let args = ["mirror", s(&src), &dest.url];
    let mut envs = Vec::new();
    if let (Some((var, _)), Some(p)) = (&up, &proxy) {
        envs.push((*var, p.url.as_str()));
    }
    let mut killed_mid_send = false;
    // A local folder: after a delay. Through the proxy: once this much has been sent (what
    // a fixed delay cannot promise on a loaded machine), or the run ended.
    for (delay_ms, sent_mib) in [(400u64, 1.5), (900, 3.0), (1500, 5.0)] {
        proxy.as_ref().map(Proxy::reset);
        let mut running = ferry.spawn_env(&args, &envs);
        match &proxy {
            Some(p) => {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
                let want = (sent_mib * MIB as f64) as u64;
                while p.sent() < want && !running.has_exited() && std::time::Instant::now() < until
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            None => std::thread::sleep(std::time::Duration::from_millis(delay_ms)),
        }
        let sent_before = proxy.as_ref().map(Proxy::sent).unwrap_or(0);
        let killed = running.kill();
        let got = dest.raw.get("big.bin");
        assert!(
            got == v1 || got == v2,
            "after a kill at {delay_ms} ms the object is neither version ({} bytes); ferry: {}",
            got.len(),
            killed.stderr
        );
        // Over 1 MiB of the new version was on its way and readers still see the old one.
        killed_mid_send |= sent_before > MIB as u64 && got == v1;
    }
    assert!(
        killed_mid_send || backend == Backend::File,
        "no kill landed while parts were being sent: the test proved nothing"
    );
    if backend == Backend::S3 {
        // The killed runs left a multipart upload behind…
        assert!(
            !dest.raw.multipart_uploads("").is_empty(),
            "no upload was left to clean up"
        );
    }
    // (here any unfinished upload of the key counts as stale, so the rerun aborts them all)
    let r = ferry
        .run_env(&args, &[("FERRY_MIRROR_STALE_UPLOADS", "0s")])
        .json();
    assert_object(&dest, "big.bin", &v2);
    // …and the rerun aborted it, whether or not the killed run lived to record its id.
    assert_eq!(dest.raw.multipart_uploads(""), Vec::<String>::new(), "{r}");
    let verify = ferry.json(&["verify", "--mirror", s(&src), &dest.url]);
    assert_eq!(uint(&verify, "matched"), 1, "{verify} after {r}");
}

/// A `kind = "mirror"` job in the daemon's config, run by `ferry sync`: objects appear, a
/// second run finds nothing to do, `delete = true` removes what the source dropped.
pub fn sync_runs_a_mirror_job(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(41, 3 * MIB));
    data::write_file(&src, "b/c.txt", b"hello");
    let job = format!(
        "[[jobs]]\nname = \"serve\"\nkind = \"mirror\"\nsource = \"{}\"\ntargets = [\"{}\"]\ndelete = true\nevery = \"1h\"\nsettle = \"0s\"\n",
        s(&src),
        dest.url
    );
    let config = write_config(&ctx, "", &job);
    let ferry = ctx.ferry();
    let first = ferry.json(&["sync", "--config", s(&config)]);
    assert_eq!(first["ok"], true, "{first}");
    let run = &array(&first, "runs")[0];
    assert_eq!(run["state"], "succeeded", "{first}");
    assert_eq!(uint(run, "bytes_sent"), 3 * MIB as u64 + 5, "{first}");
    assert_object(&dest, "a.bin", &data::random_bytes(41, 3 * MIB));
    assert_object(&dest, "b/c.txt", b"hello");

    let again = ferry.json(&["sync", "--config", s(&config)]);
    let run = &array(&again, "runs")[0];
    assert_eq!(run["unchanged"], true, "{again}");
    assert_eq!(uint(run, "bytes_sent"), 0, "{again}");

    std::fs::remove_file(src.join("b/c.txt")).expect("remove");
    let third = ferry.json(&["sync", "--config", s(&config)]);
    assert_eq!(third["ok"], true, "{third}");
    let keys: Vec<String> = dest.raw.list("").into_iter().map(|o| o.key).collect();
    assert_eq!(keys, vec!["a.bin".to_string()], "{third}");
}

/// The local index is a cache: on a new machine (empty index) objects whose BLAKE3 metadata
/// matches are adopted without sending anything, and on Azure a changed file still sends only
/// the blocks the blob lacks (block ids are content-derived). S3 needs the recorded layout for
/// part copies, so there the changed file goes whole.
pub fn a_lost_index_costs_no_resend(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    let mut w = data::random_bytes(51, 20 * MIB);
    data::write_file(&src, "w.bin", &w);
    data::write_file(&src, "small.txt", b"tokenizer");
    ctx.ferry().json(&["mirror", s(&src), &dest.url]);

    let fresh = ctx.ferry_with_index(&ctx.dir("other-index"));
    let r = fresh.json(&["mirror", s(&src), &dest.url]);
    assert_eq!(action_of(&r, "w.bin"), "adopt", "{r}");
    assert_eq!(uint(&r, "adopted"), 2, "{r}");
    assert_eq!(uint(&r, "bytes_sent"), 0, "{r}");

    w[10 * MIB..12 * MIB].copy_from_slice(&data::random_bytes(52, 2 * MIB));
    data::write_file(&src, "w.bin", &w);
    let newer = ctx.ferry_with_index(&ctx.dir("third-index"));
    let r = newer.json(&["mirror", s(&src), &dest.url]);
    assert_object(&dest, "w.bin", &w);
    let sent = uint(&r, "bytes_sent");
    match backend {
        Backend::Azure => {
            assert_eq!(action_of(&r, "w.bin"), "update", "{r}");
            // The change plus at most one (≤ 4 MiB) chunk on either side.
            assert!(
                sent < 10 * MIB as u64,
                "sent {sent} for a 2 MiB change: {r}"
            );
        }
        _ => {
            assert_eq!(action_of(&r, "w.bin"), "replace", "{r}");
            assert_eq!(sent, 20 * MIB as u64, "{r}");
        }
    }
}

/// A file whose name object_store would percent-encode (`#`, `%`, `~`, non-ASCII) is
/// mirrored under exactly its name, so a rerun finds it unchanged and `--delete` never takes
/// it for a stranger; a mirror into its own source is refused.
pub fn odd_names_are_mirrored_as_they_are(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    data::write_file(&src, "ok.bin", b"fine");
    data::write_file(&src, "notes #1.txt", b"odd");
    data::write_file(&src, "ünï~%41.txt", b"odder");
    let ferry = ctx.ferry();
    let args = ["mirror", s(&src), &dest.url, "--delete"];
    let first = ferry.json(&args);
    assert_eq!(uint(&first, "created"), 3, "{first}");
    let again = ferry.json(&args);
    assert_eq!(uint(&again, "unchanged"), 3, "{again}");
    assert_eq!(uint(&again, "deleted"), 0, "{again}");
    let keys: Vec<String> = dest.raw.list("").into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["notes #1.txt", "ok.bin", "ünï~%41.txt"]);
    assert_eq!(dest.raw.get("ünï~%41.txt"), b"odder");

    let inside = format!("file://{}/out", s(&src));
    let run = ferry.run(&["mirror", s(&src), &inside]);
    assert!(!run.status.success());
    assert!(
        run.error_line().contains("one is inside the other"),
        "{}",
        run.stderr
    );
    assert!(
        !src.join("out").exists(),
        "the refused mirror created a folder in its source"
    );
}

/// A checkpoint rewritten in place while its delta is being sent: ferry must not commit a
/// mix of versions. The run fails naming the file, the object stays the previous version
/// whole, and the rerun sends the newest. (Local folders are written too fast to interleave.)
pub fn source_changing_mid_mirror_is_not_committed(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let Some((var, url)) = upstream(backend) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    let v1 = data::random_bytes(61, 24 * MIB);
    data::write_file(&src, "ckpt.bin", &v1);
    let ferry = ctx.ferry();
    mirror(&ferry, &src, &dest, None);

    let mut v2 = v1.clone();
    v2[4 * MIB..16 * MIB].copy_from_slice(&data::random_bytes(62, 12 * MIB));
    data::write_file(&src, "ckpt.bin", &v2);
    let proxy = Proxy::start(&url, Some(4_000_000));
    let running = ferry.spawn_env(&["mirror", s(&src), &dest.url], &[(var, &proxy.url)]);
    // Wait until parts are on their way, then rewrite the file in place.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while proxy.sent() < 2 * MIB as u64 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut v3 = v2.clone();
    v3[4 * MIB..20 * MIB].copy_from_slice(&data::random_bytes(63, 16 * MIB));
    data::write_file(&src, "ckpt.bin", &v3);
    let run = running.wait();
    assert!(
        !run.status.success(),
        "a mirror whose source changed mid-way succeeded: {}",
        run.stdout
    );
    assert!(run.error_line().contains("changed while"), "{}", run.stderr);
    assert_object(&dest, "ckpt.bin", &v1);

    let r = mirror(&ferry, &src, &dest, None);
    assert_object(&dest, "ckpt.bin", &v3);
    let verify = ferry.json(&["verify", "--mirror", s(&src), &dest.url]);
    assert_eq!(uint(&verify, "matched"), 1, "{verify} after {r}");
}

/// `--delete` removes only what the source no longer has: not the object named like a source
/// symlink (which mirror skips), and nothing at all when the source lists no files (an
/// unmounted folder or a mistyped prefix).
pub fn delete_spares_symlinks_and_refuses_an_empty_source(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    data::write_file(&src, "model.bin", b"weights");
    std::os::unix::fs::symlink("model.bin", src.join("latest.bin")).expect("symlink");
    dest.raw.put("latest.bin", b"served by another tool");
    dest.raw.put("stale.bin", b"gone from the source");
    let ferry = ctx.ferry();
    let r = ferry.json(&["mirror", s(&src), &dest.url, "--delete"]);
    assert_eq!(uint(&r, "deleted"), 1, "{r}");
    assert_eq!(action_of(&r, "stale.bin"), "delete", "{r}");
    let keys: Vec<String> = dest.raw.list("").into_iter().map(|o| o.key).collect();
    assert_eq!(
        keys,
        vec!["latest.bin".to_string(), "model.bin".to_string()]
    );

    let empty = ctx.dir("empty");
    let run = ferry.run(&["mirror", s(&empty), &dest.url, "--delete"]);
    assert!(
        !run.status.success(),
        "an empty source emptied the destination"
    );
    assert!(
        run.error_line().contains("lists no files"),
        "{}",
        run.stderr
    );
    assert_eq!(dest.raw.list("").len(), 2);
}
