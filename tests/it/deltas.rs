//! Element deltas (issue 11, format version 2): a training step pushed into a repository
//! created with `--deltas` stores changed tensor chunks as deltas against the previous step;
//! every step restores byte-identical, `verify --read-data` decodes them, a damaged base is an
//! error naming the chunk and the base, replicate carries bases along, and a version 1
//! repository keeps working as before.

use std::fs;
use std::path::Path;

use crate::data::{self, Rng};
use crate::harness::{array, boolean, only_target, pushed_snapshot, s, string, uint, Backend, Ctx};
use crate::raw::{pack_objects, Location};

per_backend!(
    delta_steps_round_trip,
    damaged_base_is_named,
    replicate_carries_bases,
    gc_keeps_bases_while_needed,
    head_without_tensor_layout,
    killed_delta_push_resumes,
    replicate_into_version_1_stores_whole_chunks,
);

/// Tensors of every width ferry deltas, with odd element counts (so each ends in a short
/// chunk), and some bytes after the last tensor.
const TENSORS: &[(&str, &str, usize)] = &[
    ("a.f32", "F32", 700_001),
    ("b.bf16", "BF16", 600_003),
    ("c.f16", "F16", 300_007),
];

/// The elements of step `step`: F32 weights nudged by a relative ~1e-3 each step; BF16 and
/// F16 weights with about 1 % of their elements' low bits flipped each step.
pub fn weights(step: u32) -> Vec<u8> {
    weights_from(step, 1000)
}

/// `weights`, starting from the initial weights of `seed` (another seed: unrelated weights of
/// the same shapes, as after a re-initialization).
pub(crate) fn weights_from(step: u32, seed: u64) -> Vec<u8> {
    let mut header = String::from("{");
    let mut off = 0;
    for (name, dtype, n) in TENSORS {
        let w = if *dtype == "F32" { 4 } else { 2 };
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{n}],\"data_offsets\":[{off},{}]}},",
            off + n * w
        ));
        off += n * w;
    }
    header.pop();
    header.push('}');
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    for (t, (_, dtype, n)) in TENSORS.iter().enumerate() {
        let mut rng = Rng::new(seed + t as u64);
        let mut vals: Vec<f32> = (0..*n)
            .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04)
            .collect();
        let mut bits: Vec<u16> = vals.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        for k in 1..step {
            let mut r = Rng::new(77 * k as u64 + t as u64);
            if *dtype == "F32" {
                for v in &mut vals {
                    let u = (r.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    *v *= 1.0 + 2e-3 * u;
                }
            } else {
                for b in &mut bits {
                    if r.next_u64().is_multiple_of(100) {
                        *b ^= 1;
                    }
                }
            }
        }
        if *dtype == "F32" {
            vals.iter()
                .for_each(|v| f.extend_from_slice(&v.to_le_bytes()));
        } else {
            bits.iter()
                .for_each(|b| f.extend_from_slice(&b.to_le_bytes()));
        }
    }
    f.extend_from_slice(b"trailing bytes");
    f
}

pub fn write_step(dir: &Path, step: u32) -> u64 {
    let bytes = weights(step);
    data::write_file(dir, "model.safetensors", &bytes);
    bytes.len() as u64
}

/// Pushes steps 1..=n of the series to `url` under ref `ckpt`; returns the snapshot ids and
/// the push reports.
pub(crate) fn push_steps(ctx: &Ctx, url: &str, n: u32) -> Vec<(String, serde_json::Value)> {
    push_steps_from(ctx, url, 1, n)
}

/// Pushes steps `from..=to` of the series to `url` under ref `ckpt`.
fn push_steps_from(ctx: &Ctx, url: &str, from: u32, to: u32) -> Vec<(String, serde_json::Value)> {
    let ferry = ctx.ferry();
    (from..=to)
        .map(|step| {
            let src = ctx.dir(&format!("step-{step}"));
            write_step(&src, step);
            let push = ferry.json(&["push", s(&src), url, "--name", "ckpt"]);
            (pushed_snapshot(&push), push)
        })
        .collect()
}

/// Four steps into a repository with `--deltas 2`: the later ones store deltas (a fraction of
/// the file), chains follow the base topology (FORMAT.md), and every step restores
/// byte-identical; `verify --read-data` passes.
///
/// F32 deltas (every element nudged) are about 2/3 of a full frame, so a second delta on the
/// chain would read more than two full frames: from step 3 on they rebase onto the key
/// (depth 1). BF16/F16 deltas (1 % of elements) are small: they chain to depth 2, then step 4
/// rebases them onto the key (depth 1) instead of storing them whole.
pub fn delta_steps_round_trip(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "2"]);
    let size = weights(1).len() as u64;
    let mut steps = Vec::new();
    let mut frames_by_step = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for step in 1..=4 {
        steps.extend(push_steps_from(&ctx, &repo.url, step, step));
        let mut frames = Vec::new();
        for pack in pack_objects(&repo.raw) {
            if seen.insert(pack.key.clone()) {
                frames.extend(delta_frames(&repo.raw.get(&pack.key)));
            }
        }
        frames_by_step.push(frames);
    }
    let first = &steps[0].1;
    assert_eq!(uint(first, "chunks_delta"), 0, "{first}");
    for (k, (_, push)) in steps.iter().enumerate().skip(1) {
        assert!(uint(push, "chunks_delta") >= 3, "step {}: {push}", k + 1);
        let sent = uint(only_target(push), "bytes_uploaded");
        assert!(
            sent * 2 < size,
            "step {} sent {sent} of {size}: {push}",
            k + 1
        );
    }
    let depths = |step: usize, width: u8| -> Vec<u8> {
        frames_by_step[step - 1]
            .iter()
            .filter(|f| f.width == width)
            .map(|f| f.depth)
            .collect()
    };
    // Step 2: everything chains on step 1's full frames.
    assert!(depths(2, 4).iter().chain(&depths(2, 2)).all(|&d| d == 1));
    // Step 3: F32 rebases onto its key (read budget), BF16/F16 chain one deeper.
    let (f32_3, half_3) = (depths(3, 4), depths(3, 2));
    assert!(
        !f32_3.is_empty() && f32_3.iter().all(|&d| d == 1),
        "{f32_3:?}"
    );
    assert!(
        !half_3.is_empty() && half_3.iter().all(|&d| d == 2),
        "{half_3:?}"
    );
    // Step 4: BF16/F16 chains are at max depth: rebased onto the key, not stored whole.
    let half_4 = depths(4, 2);
    assert!(
        !half_4.is_empty() && half_4.iter().all(|&d| d == 1),
        "{half_4:?}"
    );
    let mut downloaded = Vec::new();
    for (k, (id, _)) in steps.iter().enumerate() {
        let dest = ctx.path(&format!("restore-{k}"));
        let restore = ferry.json(&["restore", &repo.url, &format!("ckpt@{id}"), s(&dest)]);
        downloaded.push(uint(&restore, "bytes_downloaded"));
        let got = fs::read(dest.join("model.safetensors")).expect("restored file");
        assert!(
            got == weights(k as u32 + 1),
            "step {} restored different bytes",
            k + 1
        );
    }
    // A delta step's restore reads its keys too, and counts them.
    assert!(
        downloaded[1..].iter().all(|&d| d > downloaded[0]),
        "bytes_downloaded by step: {downloaded:?}"
    );
    let verify = ferry.json(&["verify", &repo.url, "--read-data"]);
    assert!(boolean(&verify, "ok"), "{verify}");
}

/// Restores each of `snapshots` (steps `first`, `first + 1`, … of the series, ref `ckpt`) from
/// `url` and checks the bytes.
pub(crate) fn assert_steps_restore(ctx: &Ctx, url: &str, snapshots: &[String], first: u32) {
    for (step, id) in (first..).zip(snapshots) {
        let dest = ctx.path(&format!("restore-{step}"));
        ctx.ferry()
            .json(&["restore", url, &format!("ckpt@{id}"), s(&dest)]);
        let got = fs::read(dest.join("model.safetensors")).expect("restored file");
        assert!(got == weights(step), "step {step} restored different bytes");
    }
}

/// A delta frame's chain depth and element width, as stored.
pub(crate) struct DeltaFrame {
    pub(crate) depth: u8,
    width: u8,
}

/// The delta frames (codec 3) of a pack object.
pub(crate) fn delta_frames(pack: &[u8]) -> Vec<DeltaFrame> {
    pack_table(pack)
        .into_iter()
        .filter(|(_, off, _)| pack[*off] == 3)
        // codec, depth, base id (32), payload: mode, width.
        .map(|(_, off, _)| DeltaFrame {
            depth: pack[off + 1],
            width: pack[off + 35],
        })
        .collect()
}

/// The pack table entries of a pack object: (chunk id hex, frame offset, frame length).
pub(crate) fn pack_table(pack: &[u8]) -> Vec<(String, usize, usize)> {
    let n = pack.len();
    let table_at = u64::from_le_bytes(pack[n - 52..n - 44].try_into().unwrap()) as usize;
    let count = u32::from_le_bytes(pack[n - 44..n - 40].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| {
            let e = &pack[table_at + 48 * i..table_at + 48 * (i + 1)];
            let hex: String = e[..32].iter().map(|b| format!("{b:02x}")).collect();
            let off = u64::from_le_bytes(e[32..40].try_into().unwrap()) as usize;
            let len = u32::from_le_bytes(e[40..44].try_into().unwrap()) as usize;
            (hex, off, len)
        })
        .collect()
}

/// A flipped byte in a frame that step 2's deltas use as their base: restore of step 2
/// fails naming that base chunk, and `verify --read-data` names it too.
pub fn damaged_base_is_named(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "4"]);
    let first = push_steps(&ctx, &repo.url, 1);
    let packs = pack_objects(&repo.raw);
    assert_eq!(packs.len(), 1, "step 1 should fit one pack");
    let step1_pack = packs[0].clone();
    let src = ctx.dir("step-2");
    write_step(&src, 2);
    let push = ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    assert!(uint(&push, "chunks_delta") >= 3, "{push}");
    let second = pushed_snapshot(&push);
    drop(first);

    // The biggest frame of step 1 is a tensor chunk; every tensor chunk changed in step 2.
    let mut bytes = repo.raw.get(&step1_pack.key);
    let (base, off, len) = pack_table(&bytes).into_iter().max_by_key(|e| e.2).unwrap();
    bytes[off + len / 2] ^= 0x55;
    repo.raw.put(&step1_pack.key, &bytes);

    let restore = ferry.run(&[
        "restore",
        &repo.url,
        &format!("ckpt@{second}"),
        s(&ctx.path("r")),
    ]);
    assert!(!restore.status.success(), "{restore}");
    let error = restore.error_line();
    assert!(
        error.contains(&base) && error.contains("delta against base chunk"),
        "the restore error does not name base {base}: {restore}"
    );
    let verify = ferry.run(&["verify", &repo.url, "--read-data"]);
    assert!(!verify.status.success(), "{verify}");
    let report = verify.stdout_json();
    let named = array(&report, "problems")
        .iter()
        .filter(|p| string(p, "problem").contains(&base))
        .count();
    // The damaged frame itself, and the delta built on it.
    assert!(
        named >= 2,
        "verify names base {base} {named} times: {verify}"
    );
}

/// A `--deltas 4` source (file://) holding only step 3 of three steps pushed (the older
/// snapshots forgotten, so no snapshot names the bases of its deltas), an empty location on
/// `backend` to copy it to, and the three pushes (snapshot id, report).
pub(crate) fn newest_step_source(
    ctx: &Ctx,
    backend: Backend,
) -> (Location, Location, Vec<(String, serde_json::Value)>) {
    let from = ctx.location(Backend::File);
    let to = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &from.url, "--deltas", "4"]);
    let steps = push_steps(ctx, &from.url, 3);
    ferry.json(&["forget", &from.url, "ckpt", "--keep-last", "1"]);
    (from, to, steps)
}

/// Replicating only the newest snapshot of a delta series to an empty target copies the
/// bases its deltas need (the older snapshots stay behind), and the target restores it.
pub fn replicate_carries_bases(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (from, to, steps) = newest_step_source(&ctx, backend);
    let ferry = ctx.ferry();
    let rep = ferry.json(&["replicate", &from.url, &to.url, "--name", "ckpt"]);
    assert!(uint(&rep, "chunks_copied") > 0, "{rep}");
    // Step 3's deltas, and those of step 2 that they rest on, are copied as stored; what
    // they saved is estimated against step 1's full frames under them, close to what their
    // pushes measured.
    let (third, both) = (&steps[2].1, |f: &str| {
        uint(&steps[1].1, f) + uint(&steps[2].1, f)
    });
    let copied = uint(&rep, "chunks_delta");
    assert!(
        copied >= uint(third, "chunks_delta") && copied <= both("chunks_delta"),
        "{rep}"
    );
    let estimated = uint(&rep, "bytes_saved_by_deltas");
    let (low, high) = (
        uint(third, "bytes_saved_by_deltas"),
        both("bytes_saved_by_deltas"),
    );
    assert!(
        estimated > low / 10 * 9 && estimated < high / 10 * 11,
        "replication estimated {estimated} saved, the pushes measured {low} (step 3) and {high} (steps 2 and 3): {rep}"
    );
    let dest = ctx.path("restore");
    ferry.json(&["restore", &to.url, "ckpt", s(&dest)]);
    let got = fs::read(dest.join("model.safetensors")).expect("restored file");
    assert!(
        got == weights(3),
        "replicated step 3 restored different bytes"
    );
    let verify = ferry.json(&["verify", &to.url, "--read-data"]);
    assert!(boolean(&verify, "ok"), "{verify}");
}

/// Stored bytes of every pack object.
fn pack_bytes(raw: &crate::raw::RawStore) -> u64 {
    pack_objects(raw).iter().map(|p| p.size).sum()
}

/// Runs gc twice with no grace (mark, then delete) and checks the repository afterwards.
fn gc_twice(ferry: &crate::run::Ferry, url: &str) {
    for _ in 0..2 {
        ferry.json(&["gc", url, "--grace", "0s"]);
    }
    let verify = ferry.json(&["verify", url, "--read-data"]);
    assert!(boolean(&verify, "ok"), "{verify}");
}

/// gc after forgetting step 1 keeps step 1's chunks that step 2's deltas need (their pack also
/// holds a chunk step 2 reuses, so gc would rewrite it); once step 3 is whole (re-initialized
/// weights: no delta pays) and steps 1 and 2 are forgotten, gc removes them.
pub fn gc_keeps_bases_while_needed(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "1"]);
    let steps = push_steps(&ctx, &repo.url, 2);
    ferry.json(&["forget", &repo.url, "ckpt", "--keep-last", "1"]);
    gc_twice(&ferry, &repo.url);
    let dest = ctx.path("restore-2");
    ferry.json(&[
        "restore",
        &repo.url,
        &format!("ckpt@{}", steps[1].0),
        s(&dest),
    ]);
    let got = fs::read(dest.join("model.safetensors")).expect("restored file");
    assert!(
        got == weights(2),
        "step 2 restored different bytes after gc"
    );

    // Step 3: re-initialized weights: no delta pays, so it is stored whole.
    let src = ctx.dir("step-3");
    let bytes = weights_from(3, 5000);
    data::write_file(&src, "model.safetensors", &bytes);
    let size = bytes.len() as u64;
    let push = ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    assert_eq!(uint(&push, "chunks_delta"), 0, "{push}");
    let before = pack_bytes(&repo.raw);
    ferry.json(&["forget", &repo.url, "ckpt", "--keep-last", "1"]);
    gc_twice(&ferry, &repo.url);
    let after = pack_bytes(&repo.raw);
    // Only step 3 is left: about one file's frames (F32 barely compresses), not three.
    assert!(
        after < before && after <= size,
        "{before} -> {after} bytes of packs, file {size}"
    );
    let dest = ctx.path("restore-3");
    ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    assert!(fs::read(dest.join("model.safetensors")).expect("restored") == bytes);
}

/// A ref whose head was pushed without position-stable cuts (here: together with a version 1
/// repository, so with the `safetensors` layout) offers no counterparts: the next push stores
/// whole chunks, the one after that deltas; the version 1 repository never gets any.
pub fn head_without_tensor_layout(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let v2 = ctx.location(backend);
    let v1 = ctx.location(Backend::File);
    let ferry = ctx.ferry();
    ferry.json(&["init", &v2.url, "--deltas", "4"]);
    let init = ferry.json(&["init", &v1.url]);
    let src = ctx.dir("step-1");
    write_step(&src, 1);
    ferry.json(&["push", s(&src), &v2.url, &v1.url, "--name", "ckpt"]);
    let mut snaps = Vec::new();
    for (step, want_deltas) in [(2, false), (3, true)] {
        let src = ctx.dir(&format!("step-{step}"));
        write_step(&src, step);
        let push = ferry.json(&["push", s(&src), &v2.url, "--name", "ckpt"]);
        assert_eq!(
            uint(&push, "chunks_delta") >= 3,
            want_deltas,
            "step {step}: {push}"
        );
        snaps.push(pushed_snapshot(&push));
        let plain = ferry.json(&["push", s(&src), &v1.url, "--name", "ckpt"]);
        assert_eq!(uint(&plain, "chunks_delta"), 0, "{plain}");
    }
    assert_steps_restore(&ctx, &v2.url, &snaps, 2);
    let config = String::from_utf8(v1.raw.get("config")).expect("utf-8 config");
    assert!(
        config.contains("\"version\": 1") && !config.contains("deltas"),
        "{config} {init}"
    );
}

/// SIGKILL a delta push once one of its packs (with its index) landed; the rerun completes
/// without sending that pack again, and the repository verifies and restores the step.
pub fn killed_delta_push_resumes(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    let init = [
        &repo.url,
        "--deltas",
        "4",
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "256KiB",
    ];
    ferry.json(&[&["init"][..], &init[..]].concat());
    push_steps(&ctx, &repo.url, 1);
    let indexes = |raw: &crate::raw::RawStore| raw.list("index/").len();
    let before = indexes(&repo.raw);
    let src = ctx.dir("step-2");
    write_step(&src, 2);
    let args = ["push", s(&src), &repo.url, "--name", "ckpt"];
    // Slow every store call down so the push is surely killed half-way (GCS more: its emulator
    // answers faster than moto and Azurite, and the look at the index takes as long).
    let faults = if backend == Backend::Gcs {
        "rate=0,latency_ms=400"
    } else {
        "rate=0,latency_ms=150"
    };
    let mut push = ferry.spawn_env(&args, &[("FERRY_FAULTS", faults)]);
    let mut landed = false;
    while !push.has_exited() {
        if indexes(&repo.raw) > before {
            landed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let killed = push.kill();
    assert!(
        landed && !killed.status.success(),
        "not killed mid-push: {killed}"
    );
    let durable = indexes(&repo.raw) - before;
    let rerun = ferry.json(&args);
    assert!(uint(&rerun, "chunks_delta") >= 1, "{rerun}");
    let all = indexes(&repo.raw) - before;
    assert!(
        (uint(&rerun, "packs_uploaded") as usize) < all,
        "the rerun re-sent every pack ({durable} had landed): {rerun}"
    );
    let verify = ferry.json(&["verify", &repo.url, "--read-data"]);
    assert!(boolean(&verify, "ok"), "{verify}");
    let dest = ctx.path("restore");
    ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    assert!(fs::read(dest.join("model.safetensors")).expect("restored") == weights(2));
}

/// Replicating a delta series into an existing version 1 repository stores the delta chunks
/// whole (an older ferry must still read it): it restores every step, verifies, and holds no
/// pack index that lists bases.
pub fn replicate_into_version_1_stores_whole_chunks(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let from = ctx.location(Backend::File);
    let to = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &from.url, "--deltas", "4"]);
    ferry.json(&["init", &to.url]);
    let steps = push_steps(&ctx, &from.url, 2);
    ferry.json(&["replicate", &from.url, &to.url, "--name", "ckpt"]);
    for (k, (id, _)) in steps.iter().enumerate() {
        let dest = ctx.path(&format!("restore-{k}"));
        ferry.json(&["restore", &to.url, &format!("ckpt@{id}"), s(&dest)]);
        let got = fs::read(dest.join("model.safetensors")).expect("restored file");
        assert!(
            got == weights(k as u32 + 1),
            "step {} restored different bytes",
            k + 1
        );
    }
    let verify = ferry.json(&["verify", &to.url, "--read-data"]);
    assert!(boolean(&verify, "ok"), "{verify}");
    for o in to.raw.list("index/") {
        assert_eq!(
            &to.raw.get(&o.key)[..8],
            b"FRYIDX01",
            "{} lists delta bases",
            o.key
        );
    }
}
