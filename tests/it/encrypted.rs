//! Encrypted repositories (issue 15) on every backend: push, restore, pull, verify, gc and
//! replicate work with the key; no byte of any object shows the source's content, its paths or
//! the plain BLAKE3 of a file; a missing or wrong key fails clearly; a flipped byte in any
//! object fails authentication naming the object; `key rotate` retires the old key.

use std::path::Path;

use crate::data;
use crate::harness::{boolean, s, string, uint, Backend, Ctx};
use crate::raw::{Location, RawStore};

per_backend!(
    encrypted_repository_round_trips_and_hides_everything,
    flipped_bytes_and_wrong_keys_are_named,
    replicate_reseals_between_keys_and_plain,
    an_unfinished_encrypted_init_is_named
);

/// A string that appears verbatim in a plain repository (its file is stored raw).
const CANARY: &[u8] = b"FERRY-CANARY-the-weights-of-project-nightingale";
/// A file name only the snapshot records.
const SECRET_NAME: &str = "nightingale-secret-plan.bin";

/// A checkpoint tree and one file that holds [`CANARY`] among random bytes.
fn source(root: &Path) {
    data::checkpoint_tree(root, 15);
    let mut secret = CANARY.to_vec();
    secret.extend(data::random_bytes(1515, 64 * 1024));
    data::write_file(root, SECRET_NAME, &secret);
}

/// Every needle (with a label) found in any object of `raw`: `(label, object key)`.
fn found_in(raw: &RawStore, needles: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    let objects = raw.list("");
    assert!(!objects.is_empty(), "no objects to scan");
    let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    let mut hits = Vec::new();
    for (key, bytes) in keys.iter().zip(raw.get_many(&keys)) {
        for (label, needle) in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                hits.push((label.clone(), key.clone()));
            }
        }
    }
    hits
}

/// What must not show in an encrypted repository: the canary, the secret file's name, and
/// the plain BLAKE3 of each source file, as hex and as raw bytes.
fn needles(src: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("the canary".to_string(), CANARY.to_vec()),
        ("a file name".to_string(), SECRET_NAME.as_bytes().to_vec()),
    ];
    for (rel, bytes) in data::file_contents(src) {
        if bytes.is_empty() {
            continue;
        }
        let h = blake3::hash(&bytes);
        out.push((format!("BLAKE3 of {rel}"), h.to_hex().as_bytes().to_vec()));
        out.push((format!("raw BLAKE3 of {rel}"), h.as_bytes().to_vec()));
    }
    out
}

/// A new key file `LABEL.key` (`ferry key generate`).
fn new_key(ctx: &Ctx, label: &str) -> std::path::PathBuf {
    let path = ctx.path(&format!("{label}.key"));
    ctx.ferry().json(&["key", "generate", s(&path)]);
    path
}

/// A key file `k.key` and a [`source`] tree `src`, for a test of one encrypted repository.
fn keyed_source(ctx: &Ctx) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = new_key(ctx, "k");
    let src = ctx.dir("src");
    source(&src);
    (key, src)
}

/// A second, empty location on `backend` (a folder beside the first for `file://`).
fn second(ctx: &Ctx, backend: Backend) -> (String, Option<Location>) {
    match backend {
        Backend::File => (format!("file://{}", s(&ctx.path("replica"))), None),
        _ => {
            let l = ctx.location(backend);
            (l.url.clone(), Some(l))
        }
    }
}

pub fn encrypted_repository_round_trips_and_hides_everything(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (k1, k2) = (ctx.path("k1.key"), ctx.path("k2.key"));
    let ferry = ctx.ferry();
    ferry.json(&["key", "generate", s(&k1)]);
    let new_id = ferry.json(&["key", "generate", s(&k2)]);
    let src = ctx.dir("src");
    source(&src);

    // The scan finds the needles in a plain repository: it can fail.
    let plain = ctx.location(backend);
    ferry.json(&["push", s(&src), &plain.url, "--name", "m"]);
    let shown = found_in(&plain.raw, &needles(&src));
    // (Its snapshot is compressed, so names and hex digests need not show verbatim; its
    // chunk ids are plain BLAKE3, and a one-chunk file's id is the file's BLAKE3.)
    assert!(
        shown.iter().any(|(l, _)| l == "the canary"),
        "the control scan of a plain repository misses the canary: {shown:?}"
    );
    assert!(
        shown.iter().any(|(l, _)| l.starts_with("raw BLAKE3 of")),
        "the control scan of a plain repository misses every file's BLAKE3: {shown:?}"
    );

    let repo = ctx.location(backend);
    let key = ["--key-file", s(&k1)];
    let init = ferry.json(&[&["init", &repo.url, "--encrypt"][..], &key].concat());
    assert!(boolean(&init, "encrypted"), "{init}");
    assert_eq!(string(&init, "cipher"), "aes256gcmsiv", "{init}");
    let push = ferry.json(&[&["push", s(&src), &repo.url, "--name", "m"][..], &key].concat());
    assert!(uint(&push, "chunks_new") > 0, "{push}");
    let shown = found_in(&repo.raw, &needles(&src));
    assert!(shown.is_empty(), "an encrypted repository shows {shown:?}");

    let out = ctx.path("restored");
    ferry.json(&[&["restore", &repo.url, "m", s(&out)][..], &key].concat());
    data::assert_same_tree(&src, &out);
    let verify = ferry.json(&[&["verify", &repo.url, "--read-data"][..], &key].concat());
    assert!(boolean(&verify, "ok"), "{verify}");
    let pulled = ctx.path("pulled");
    ferry.json(&[&["pull", &repo.url, "m", s(&pulled)][..], &key].concat());
    data::assert_same_tree(&src, &pulled.join("current"));
    let gc = ferry.json(&[&["gc", &repo.url][..], &key].concat());
    assert_eq!(uint(&gc, "snapshots_deleted"), 0, "{gc}");

    // Replicated into an empty location: the target shares the data key, frames copy as
    // stored, and it is as opaque.
    let (to_url, to) = second(&ctx, backend);
    let rep = ferry.json(&[&["replicate", &repo.url, &to_url][..], &key].concat());
    assert!(uint(&rep, "chunks_copied") > 0, "{rep}");
    let from_replica = ctx.path("from-replica");
    ferry.json(&[&["restore", &to_url, "m", s(&from_replica)][..], &key].concat());
    data::assert_same_tree(&src, &from_replica);
    if let Some(to) = &to {
        let shown = found_in(&to.raw, &needles(&src));
        assert!(shown.is_empty(), "the replica shows {shown:?}");
    }

    // Rotate to k2: the old key is refused, the new one pushes and restores.
    let rotated = ferry.json(&[
        "key",
        "rotate",
        &repo.url,
        "--new-key-file",
        s(&k2),
        "--key-file",
        s(&k1),
    ]);
    assert_eq!(string(&rotated, "key_id"), string(&new_id, "key_id"));
    assert_eq!(
        rotated["retired"].as_array().map(Vec::len),
        Some(1),
        "{rotated}"
    );
    let old = ferry.run(&[&["snapshots", &repo.url][..], &key].concat());
    assert!(
        !old.status.success()
            && old
                .error_line()
                .contains("the key does not open this repository"),
        "{old}"
    );
    data::write_file(&src, "step-2/extra.bin", &data::random_bytes(2, 300 * 1024));
    let new_key = ["--key-file", s(&k2)];
    ferry.json(&[&["push", s(&src), &repo.url, "--name", "m"][..], &new_key].concat());
    let after = ctx.path("after-rotation");
    ferry.json(&[&["restore", &repo.url, "m", s(&after)][..], &new_key].concat());
    data::assert_same_tree(&src, &after);
    let shown = found_in(&repo.raw, &needles(&src));
    assert!(
        shown.is_empty(),
        "after rotation the repository shows {shown:?}"
    );
}

pub fn flipped_bytes_and_wrong_keys_are_named(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let ferry = ctx.ferry();
    let (k1, k2) = (new_key(&ctx, "k1"), new_key(&ctx, "k2"));
    let src = ctx.dir("src");
    source(&src);
    let repo = ctx.location(backend);
    let key = ["--key-file", s(&k1)];
    ferry.json(&[&["init", &repo.url, "--encrypt"][..], &key].concat());
    ferry.json(&[&["push", s(&src), &repo.url, "--name", "m"][..], &key].concat());

    // No key, the wrong key, and the key in FERRY_KEY.
    let none = ferry.run(&["snapshots", &repo.url]);
    assert!(
        !none.status.success()
            && none.error_line().contains("is encrypted")
            && none.error_line().contains("--key-file"),
        "{none}"
    );
    let wrong = ferry.run(&["snapshots", &repo.url, "--key-file", s(&k2)]);
    assert!(
        wrong
            .error_line()
            .contains("the key does not open this repository"),
        "{wrong}"
    );
    let text = std::fs::read_to_string(&k1).expect("key file");
    let by_var = ferry.run_env(&["snapshots", &repo.url], &[("FERRY_KEY", text.trim())]);
    assert!(by_var.status.success(), "{by_var}");
    assert!(
        !format!("{by_var}").contains(text.trim()),
        "the key was echoed"
    );

    // One object of each kind, one byte flipped: the command that reads it fails and names
    // it; put back, everything reads again.
    let objects = repo.raw.list("");
    let pick = |prefix: &str| {
        objects
            .iter()
            .find(|o| o.key.starts_with(prefix))
            .unwrap_or_else(|| panic!("no object under {prefix}: {objects:?}"))
            .key
            .clone()
    };
    for prefix in ["packs/", "index/", "snapshots/", "refs/", "keys/"] {
        let victim = pick(prefix);
        let good = repo.raw.get(&victim);
        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x20;
        repo.raw.put(&victim, &bad);
        // A fresh local index, so nothing is known before reading the store.
        let fresh =
            ctx.ferry_with_index(&ctx.path(&format!("index-{}", prefix.trim_end_matches('/'))));
        let out = ctx.path(&format!("out-{}", prefix.trim_end_matches('/')));
        let run = fresh.run(&[&["restore", &repo.url, "m", s(&out)][..], &key].concat());
        let line = run.error_line();
        assert!(!run.status.success(), "{prefix}: {run}");
        let name = victim.rsplit('/').next().expect("a name");
        assert!(
            line.contains(name),
            "{prefix}: the error does not name {victim}: {run}"
        );
        assert!(
            line.contains("fails authentication")
                || line.contains("the key does not open this repository"),
            "{prefix}: {run}"
        );
        repo.raw.put(&victim, &good);
    }
    let out = ctx.path("restored");
    ferry.json(&[&["restore", &repo.url, "m", s(&out)][..], &key].concat());
    data::assert_same_tree(&src, &out);
}

/// A location holding only `keys/` (an `init --encrypt` stopped between wrapping its data key
/// and writing its config) is named as such by `init`, with the fix; a location holding
/// anything else is "not empty", as before. On `file://` the fix works: with `keys/` deleted,
/// init succeeds.
pub fn an_unfinished_encrypted_init_is_named(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let ferry = ctx.ferry();
    let (key_path, src) = keyed_source(&ctx);
    let key = ["--key-file", s(&key_path)];
    let half = ctx.location(backend);
    half.raw
        .put("keys/0123456789abcdef0123456789abcdef", &[7; 104]);
    let init = ferry.run(&[&["init", &half.url, "--encrypt"][..], &key].concat());
    let line = init.error_line();
    assert!(
        !init.status.success() && line.contains("did not finish") && line.contains("keys/"),
        "{init}"
    );
    let push = ferry.run(&[&["push", s(&src), &half.url, "--name", "m"][..], &key].concat());
    assert!(push.error_line().contains("did not finish"), "{push}");

    let other = ctx.location(backend);
    other
        .raw
        .put("keys/0123456789abcdef0123456789abcdef", &[7; 104]);
    other.raw.put("notes.txt", b"someone else's");
    let init = ferry.run(&[&["init", &other.url, "--encrypt"][..], &key].concat());
    assert!(
        init.error_line().contains("is not empty") && !init.error_line().contains("did not finish"),
        "{init}"
    );

    if backend == Backend::File {
        let url = half.url.trim_start_matches("file://");
        std::fs::remove_dir_all(Path::new(url).join("keys")).expect("delete keys/");
        let init = ferry.json(&[&["init", &half.url, "--encrypt"][..], &key].concat());
        assert!(boolean(&init, "encrypted"), "{init}");
    }
}

/// Element deltas and a sharded push into an encrypted repository (`file://`: both are the
/// encoder's and the ref log's work, the same on every store; the stores' side of sealing is
/// covered above): delta frames are written, every step restores byte-identical, `verify
/// --read-data` decodes the chains, the sharded run commits and restores, and no file's plain
/// BLAKE3 shows.
#[test]
fn deltas_and_shards_on_an_encrypted_repository() {
    use crate::deltas::{weights, write_step};
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let ferry = ctx.ferry();
    let key_path = new_key(&ctx, "k");
    let key = ["--key-file", s(&key_path)];
    let repo = ctx.location(Backend::File);
    ferry.json(&[&["init", &repo.url, "--encrypt", "--deltas", "2"][..], &key].concat());
    let mut snapshots = Vec::new();
    let mut needles = Vec::new();
    for step in 1..=3u32 {
        let src = ctx.dir(&format!("step-{step}"));
        let size = write_step(&src, step);
        needles.extend(self::needles(&src).into_iter().skip(2));
        let push =
            ferry.json(&[&["push", s(&src), &repo.url, "--name", "ckpt"][..], &key].concat());
        if step > 1 {
            assert!(uint(&push, "chunks_delta") > 0, "step {step}: {push}");
            assert!(uint(&push, "bytes_uploaded") < size, "step {step}: {push}");
            // The local base cache holds the previous step: only frame heads are read back,
            // decrypted without their tags, not whole frames.
            let read = uint(&push, "bytes_read_for_deltas");
            assert!(
                read > 0 && read * 100 < size,
                "step {step} read {read} of {size} back: {push}"
            );
        }
        snapshots.push(crate::harness::pushed_snapshot(&push));
    }
    for (step, id) in (1u32..).zip(&snapshots) {
        let dest = ctx.path(&format!("restore-{step}"));
        ferry.json(
            &[
                &["restore", &repo.url, &format!("ckpt@{id}"), s(&dest)][..],
                &key,
            ]
            .concat(),
        );
        let got = std::fs::read(dest.join("model.safetensors")).expect("restored file");
        assert!(got == weights(step), "step {step} restored different bytes");
    }
    let verify = ferry.json(&[&["verify", &repo.url, "--read-data"][..], &key].concat());
    assert!(boolean(&verify, "ok"), "{verify}");

    let src = ctx.dir("sharded");
    for i in 0..4u64 {
        data::write_file(
            &src,
            &format!("rank-{i}.bin"),
            &data::random_bytes(40 + i, 200_000),
        );
    }
    needles.extend(self::needles(&src).into_iter().skip(2));
    let mut last = serde_json::Value::Null;
    for shard in ["0/2", "1/2"] {
        let args = [
            "push",
            s(&src),
            &repo.url,
            "--name",
            "shards",
            "--shard",
            shard,
            "--run",
            "r1",
        ];
        last = ferry.json(&[&args[..], &key].concat());
    }
    let report = &crate::harness::only_target(&last)["shard"];
    assert!(
        report["committed"].is_string(),
        "the second shard did not commit: {last}"
    );
    let dest = ctx.path("restore-shards");
    ferry.json(&[&["restore", &repo.url, "shards", s(&dest)][..], &key].concat());
    data::assert_same_tree(&src, &dest);
    let shown = found_in(&repo.raw, &needles);
    assert!(shown.is_empty(), "the encrypted repository shows {shown:?}");
}

/// A push with a key into two empty locations creates both encrypted under one data key (one
/// pass names and seals chunks for both); each restores with the key, neither without.
#[test]
fn a_push_with_a_key_creates_encrypted_repositories_alike() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let ferry = ctx.ferry();
    let (key_path, src) = keyed_source(&ctx);
    let key = ["--key-file", s(&key_path)];
    let first = ctx.location(Backend::File);
    let second = format!("file://{}", s(&ctx.path("second")));
    let push = ferry.json(
        &[
            &["push", s(&src), &first.url, &second, "--name", "m"][..],
            &key,
        ]
        .concat(),
    );
    assert_eq!(push["targets"].as_array().map(Vec::len), Some(2), "{push}");
    for (i, url) in [&first.url, &second].into_iter().enumerate() {
        let plain = ferry.run(&["snapshots", url]);
        assert!(
            plain.error_line().contains("is encrypted"),
            "{url}: {plain}"
        );
        let out = ctx.path(&format!("out-{i}"));
        ferry.json(&[&["restore", url, "m", s(&out)][..], &key].concat());
        data::assert_same_tree(&src, &out);
    }
    let shown = found_in(&first.raw, &needles(&src));
    assert!(shown.is_empty(), "{shown:?}");
}

/// Replication between repositories sealed differently re-seals every chunk and says so:
/// encrypted under one key into a repository under another (opened with its own key only
/// afterwards, and as opaque), then into a plain repository (readable without a key), then
/// from that plain one into a new encrypted one. A second run copies nothing; a new step
/// copies only its new chunks.
pub fn replicate_reseals_between_keys_and_plain(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let ferry = ctx.ferry();
    let (k1, k2) = (new_key(&ctx, "k1"), new_key(&ctx, "k2"));
    let both = ["--key-file", s(&k1), "--key-file", s(&k2)];
    let src = ctx.dir("src");
    source(&src);
    let a = ctx.location(backend);
    ferry.json(&[&["init", &a.url, "--encrypt"][..], &both[..2]].concat());
    ferry.json(&[&["push", s(&src), &a.url, "--name", "m"][..], &both[..2]].concat());

    let (b_url, b) = second(&ctx, backend);
    ferry.json(&["init", &b_url, "--encrypt", "--key-file", s(&k2)]);
    let rep = ferry.json(&[&["replicate", &a.url, &b_url][..], &both].concat());
    assert!(boolean(&rep, "resealed"), "{rep}");
    assert_eq!(uint(&rep, "snapshots_copied"), 1, "{rep}");
    let first_chunks = uint(&rep, "chunks_copied");
    assert!(first_chunks > 0, "{rep}");
    let again = ferry.json(&[&["replicate", &a.url, &b_url][..], &both].concat());
    assert_eq!(
        (
            uint(&again, "snapshots_copied"),
            uint(&again, "chunks_copied")
        ),
        (0, 0),
        "{again}"
    );
    let out_b = ctx.path("out-b");
    ferry.json(&["restore", &b_url, "m", s(&out_b), "--key-file", s(&k2)]);
    data::assert_same_tree(&src, &out_b);
    let wrong = ferry.run(&["snapshots", &b_url, "--key-file", s(&k1)]);
    assert!(wrong.error_line().contains("does not open"), "{wrong}");
    if let Some(b) = &b {
        let shown = found_in(&b.raw, &needles(&src));
        assert!(shown.is_empty(), "the re-sealed replica shows {shown:?}");
    }

    // A new step: only its new chunks are re-sealed.
    data::write_file(&src, "step-2/new.bin", &data::random_bytes(77, 200 * 1024));
    ferry.json(&[&["push", s(&src), &a.url, "--name", "m"][..], &both[..2]].concat());
    let step = ferry.json(&[&["replicate", &a.url, &b_url][..], &both].concat());
    assert_eq!(uint(&step, "snapshots_copied"), 1, "{step}");
    assert!(
        (1..first_chunks).contains(&uint(&step, "chunks_copied")),
        "{step}"
    );

    // Into a plain repository: readable without any key.
    let plain = ctx.path("plain");
    let plain_url = format!("file://{}", s(&plain));
    ferry.json(&["init", &plain_url]);
    let rep = ferry.json(&[&["replicate", &b_url, &plain_url][..], &both].concat());
    assert!(boolean(&rep, "resealed"), "{rep}");
    let out_plain = ctx.path("out-plain");
    ferry.json(&["restore", &plain_url, "m", s(&out_plain)]);
    data::assert_same_tree(&src, &out_plain);

    // And from plain into a new encrypted repository.
    let c = ctx.path("c");
    let c_url = format!("file://{}", s(&c));
    ferry.json(&["init", &c_url, "--encrypt", "--key-file", s(&k1)]);
    let rep = ferry.json(&["replicate", &plain_url, &c_url, "--key-file", s(&k1)]);
    assert!(boolean(&rep, "resealed"), "{rep}");
    let out_c = ctx.path("out-c");
    ferry.json(&["restore", &c_url, "m", s(&out_c), "--key-file", s(&k1)]);
    data::assert_same_tree(&src, &out_c);
}

/// A repository sealed with XChaCha20-Poly1305 (`init --cipher xchacha20poly1305`, and every
/// encrypted repository made before AES-256-GCM-SIV became the default) pushes, restores and
/// verifies; a replica made from it shares its data key and cipher, so frames copy as stored;
/// replicating it into a repository of the default cipher re-seals. `--cipher` needs
/// `--encrypt` and a cipher ferry knows.
#[test]
fn a_repository_sealed_with_xchacha20poly1305_keeps_working() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let ferry = ctx.ferry();
    let (key_path, src) = keyed_source(&ctx);
    let key = ["--key-file", s(&key_path)];
    let cipher_of = |dir: &Path| -> String {
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config")).expect("config"))
                .expect("config JSON");
        config["encryption"]["cipher"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };

    let old = ctx.path("old");
    let old_url = format!("file://{}", s(&old));
    let init = ferry.json(
        &[
            &[
                "init",
                &old_url,
                "--encrypt",
                "--cipher",
                "xchacha20poly1305",
            ][..],
            &key,
        ]
        .concat(),
    );
    assert_eq!(string(&init, "cipher"), "xchacha20poly1305", "{init}");
    assert_eq!(cipher_of(&old), "xchacha20poly1305");
    ferry.json(&[&["push", s(&src), &old_url, "--name", "m"][..], &key].concat());
    let out = ctx.path("out-old");
    ferry.json(&[&["restore", &old_url, "m", s(&out)][..], &key].concat());
    data::assert_same_tree(&src, &out);
    let verify = ferry.json(&[&["verify", &old_url, "--read-data"][..], &key].concat());
    assert!(boolean(&verify, "ok"), "{verify}");

    // Into an empty location: same data key, same cipher, frames as stored.
    let copy = ctx.path("copy");
    let copy_url = format!("file://{}", s(&copy));
    let rep = ferry.json(&[&["replicate", &old_url, &copy_url][..], &key].concat());
    assert!(
        !boolean(&rep, "resealed") && uint(&rep, "chunks_copied") > 0,
        "{rep}"
    );
    assert_eq!(cipher_of(&copy), "xchacha20poly1305");
    let out = ctx.path("out-copy");
    ferry.json(&[&["restore", &copy_url, "m", s(&out)][..], &key].concat());
    data::assert_same_tree(&src, &out);

    // Into a repository of the default cipher (another data key): re-sealed.
    let new = ctx.path("new");
    let new_url = format!("file://{}", s(&new));
    ferry.json(&[&["init", &new_url, "--encrypt"][..], &key].concat());
    assert_eq!(cipher_of(&new), "aes256gcmsiv");
    let rep = ferry.json(&[&["replicate", &old_url, &new_url][..], &key].concat());
    assert!(boolean(&rep, "resealed"), "{rep}");
    let out = ctx.path("out-new");
    ferry.json(&[&["restore", &new_url, "m", s(&out)][..], &key].concat());
    data::assert_same_tree(&src, &out);
    let shown = found_in(&RawStore::Dir(new.clone()), &needles(&src));
    assert!(shown.is_empty(), "{shown:?}");

    let elsewhere = format!("file://{}", s(&ctx.path("elsewhere")));
    let unasked = ferry.run(&["init", &elsewhere, "--cipher", "xchacha20poly1305"]);
    assert!(
        !unasked.status.success() && format!("{unasked}").contains("--encrypt"),
        "{unasked}"
    );
    let unknown = ferry.run(
        &[
            &["init", &elsewhere, "--encrypt", "--cipher", "rot13"][..],
            &key,
        ]
        .concat(),
    );
    assert!(
        !unknown.status.success() && format!("{unknown}").contains("aes256gcmsiv"),
        "{unknown}"
    );
}

/// The daemon's keys come from `key_file` in `[stores]`: a push job creates its target
/// encrypted under its store's key, and a replicate job into a store encrypted under another
/// key re-seals; each repository opens with its own key only.
#[test]
fn daemon_jobs_use_each_stores_key_file() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let ferry = ctx.ferry();
    let (k1, k2) = (new_key(&ctx, "k1"), new_key(&ctx, "k2"));
    let src = ctx.dir("src");
    source(&src);
    let (a, b, c) = (ctx.path("a"), ctx.path("b"), ctx.path("c"));
    let b_url = format!("file://{}", s(&b));
    ferry.json(&["init", &b_url, "--encrypt", "--key-file", s(&k2)]);
    let config = crate::daemon::write_config(
        &ctx,
        "",
        &format!(
            "[stores.a]\nurl = \"file://{}\"\nkey_file = \"{}\"\n\
             [stores.b]\nurl = \"{b_url}\"\nkey_file = \"{}\"\n\
             [[jobs]]\nname = \"push\"\nsource = \"{}\"\nref = \"m\"\ntargets = [\"a\"]\nevery = \"1h\"\nsettle = \"100ms\"\n\
             [[jobs]]\nname = \"copy\"\nfrom = \"a\"\nrefs = [\"m\"]\ntargets = [\"b\"]\nevery = \"1h\"\n\
             [stores.c]\nurl = \"file://{}\"\n\
             [[jobs]]\nname = \"plain\"\nsource = \"{}\"\nref = \"m\"\ntargets = [\"c\"]\nevery = \"1h\"\nsettle = \"100ms\"\n",
            s(&a),
            s(&k1),
            s(&k2),
            s(&src),
            s(&c),
            s(&src)
        ),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let push = ferry.json(&["sync", "--config", s(&config), "--job", "push"]);
    assert!(push.to_string().contains("succeeded"), "{push}");
    let copy = ferry.json(&["sync", "--config", s(&config), "--job", "copy"]);
    assert!(copy.to_string().contains("succeeded"), "{copy}");
    // A store without a key_file gets no other store's key: the repository made there is
    // plain.
    let plain = ferry.json(&["sync", "--config", s(&config), "--job", "plain"]);
    assert!(plain.to_string().contains("succeeded"), "{plain}");
    let c_url = format!("file://{}", s(&c));
    ferry.json(&["snapshots", &c_url]);
    let a_url = format!("file://{}", s(&a));
    for (i, (url, key, other)) in [(&a_url, &k1, &k2), (&b_url, &k2, &k1)]
        .into_iter()
        .enumerate()
    {
        let wrong = ferry.run(&["snapshots", url, "--key-file", s(other)]);
        assert!(
            wrong.error_line().contains("does not open"),
            "{url}: {wrong}"
        );
        let out = ctx.path(&format!("out-{i}"));
        ferry.json(&["restore", url, "m", s(&out), "--key-file", s(key)]);
        data::assert_same_tree(&src, &out);
    }
}

/// `ferry mirror` from a location holding an encrypted repository is refused, naming the
/// way to publish plain files and the flag that copies the repository's objects anyway.
#[test]
fn mirroring_an_encrypted_repository_needs_asking() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let ferry = ctx.ferry();
    let (key_path, src) = keyed_source(&ctx);
    let repo = ctx.dir("repo");
    let repo_url = format!("file://{}", s(&repo));
    ferry.json(&["init", &repo_url, "--encrypt", "--key-file", s(&key_path)]);
    ferry.json(&[
        "push",
        s(&src),
        &repo_url,
        "--name",
        "m",
        "--key-file",
        s(&key_path),
    ]);
    let dest = ctx.path("mirror");
    let refused = ferry.run(&["mirror", s(&repo), s(&dest)]);
    let line = refused.error_line();
    assert!(
        !refused.status.success()
            && line.contains("encrypted ferry repository")
            && line.contains("ferry restore")
            && line.contains("--allow-encrypted-source"),
        "{refused}"
    );
    assert!(!dest.join("config").exists(), "the refused mirror wrote");
    ferry.json(&["mirror", s(&repo), s(&dest), "--allow-encrypted-source"]);
    assert!(
        dest.join("config").exists(),
        "the asked-for mirror copied nothing"
    );
    // A plain folder mirrors as before.
    ferry.json(&["mirror", s(&src), s(&ctx.path("plain-mirror"))]);
}
