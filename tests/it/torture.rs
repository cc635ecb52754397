//! Crash torture: SIGKILL `ferry push` and `ferry replicate` at seeded random fractions of
//! their typical duration (which follows the machine's load), rerun, and check after every
//! kill that
//! - the repository verifies with `--read-data` (every pack and snapshot hashes to its id,
//!   every chunk to its id, every referenced chunk is indexed);
//! - no object that existed before the kill was removed or resized;
//! - its ref log (read raw, each entry checked with `RefEntry::decode`) is linear and names
//!   exactly the snapshots pushed, in order;
//! - the newest snapshot and a rotating share of the older ones restore byte-identical (all of
//!   them after the last kill; `FERRY_TORTURE_FULL=1` restores all of them after every kill).
//!   Old snapshots are immutable and hash-checked by verify, so a rotation keeps the cost
//!   linear without leaving a gap;
//! - packs which had landed were not uploaded again: the rerun's packs are all new, and no
//!   chunk id is in two indexed packs.
//!
//! `FERRY_TORTURE_SEED` replays another schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use ferry::repo::RefEntry;

use crate::checks::{self, Logged, PackIndexes};
use crate::data::{self, Rng, KIB};
use crate::harness::{pushed_snapshot, s, uint, Backend, Ctx};
use crate::raw::Location;
use crate::run::{Ferry, Run};

/// Kills that must land while the command still runs.
const KILLS: u32 = 20;
/// Iterations at most (a kill that comes after the command finished does not count).
const MAX_ROUNDS: u32 = 40;
/// Older snapshots restored after each kill, besides the newest.
const RESTORES_PER_ROUND: usize = 2;

#[test]
fn push_kills_file() {
    push_kills(Backend::File);
}

#[test]
fn push_kills_s3() {
    push_kills(Backend::S3);
}

#[test]
fn replicate_kills_file() {
    replicate_kills(Backend::File);
}

#[test]
fn replicate_kills_s3() {
    replicate_kills(Backend::S3);
}

fn seed(default: u64) -> u64 {
    std::env::var("FERRY_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Version `round` of the tortured tree: a 1.5 MiB shard that changes every round, one that
/// changes every third round, a file that never changes and a small JSON file.
fn write_version(root: &Path, round: u64) {
    data::write_file(
        root,
        "model/shard-a.bin",
        &data::random_bytes(10_000 + round, 1536 * KIB),
    );
    data::write_file(
        root,
        "model/shard-b.bin",
        &data::random_bytes(20_000 + round / 3, 1024 * KIB),
    );
    data::write_file(root, "tokenizer.txt", &data::text_bytes(7, 100 * KIB));
    data::write_file(
        root,
        "trainer_state.json",
        format!("{{\"step\": {}}}\n", round * 100).as_bytes(),
    );
}

/// One repository under torture: its location, what each logged snapshot must restore to,
/// and its objects, pack indexes and ref entries as last seen.
struct Tortured<'a> {
    ctx: &'a Ctx,
    repo: Location,
    expected: Vec<(String, PathBuf)>,
    objects: BTreeMap<String, u64>,
    indexes: PackIndexes,
    refs: BTreeMap<String, RefEntry>,
    restores: usize,
}

impl<'a> Tortured<'a> {
    fn new(ctx: &'a Ctx, backend: Backend) -> Self {
        Tortured {
            ctx,
            repo: ctx.location(backend),
            expected: Vec::new(),
            objects: BTreeMap::new(),
            indexes: PackIndexes::default(),
            refs: BTreeMap::new(),
            restores: 0,
        }
    }

    /// Lists the repository: checks that no object seen before was removed or resized, and
    /// loads new pack indexes and ref entries. Returns the packs whose index is new.
    fn observe(&mut self, when: &str) -> BTreeSet<String> {
        let now: BTreeMap<String, u64> = self
            .repo
            .raw
            .list("")
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        for (key, size) in &self.objects {
            assert_eq!(
                now.get(key),
                Some(size),
                "{when}: {key} ({size} bytes) was removed or changed"
            );
        }
        let fresh = self.indexes.update(&self.repo.raw, now.keys().cloned());
        let new_refs: Vec<String> = now
            .keys()
            .filter(|k| k.starts_with("refs/") && !self.refs.contains_key(*k))
            .cloned()
            .collect();
        for (key, bytes) in new_refs.iter().zip(self.repo.raw.get_many(&new_refs)) {
            let entry = RefEntry::decode(&bytes)
                .unwrap_or_else(|e| panic!("{when}: ref entry {key} does not decode: {e}"));
            assert_eq!(key, &format!("refs/ckpt/{:020}", entry.seq), "{when}");
            assert_eq!(entry.name, "ckpt", "{when}: {key}");
            self.refs.insert(key.clone(), entry);
        }
        self.objects = now;
        fresh
    }

    /// Everything the suite promises after a kill and a successful rerun that reported
    /// `rerun`; `observe` must have run between the two.
    fn check(&mut self, ferry: &Ferry, rerun: &Value, round: u32) {
        let when = format!("round {round}");
        let fresh = self.observe(&when);
        assert_eq!(
            uint(rerun, "packs_uploaded"),
            fresh.len() as u64,
            "{when}: the rerun uploaded packs that were already there: {rerun}"
        );
        self.indexes.assert_no_chunk_twice();
        checks::verify_read_data(ferry, &self.repo.url);
        let log: Vec<Logged> = self
            .refs
            .values()
            .map(|e| Logged {
                seq: e.seq,
                snapshot: e.snapshot.to_hex(),
            })
            .collect();
        checks::assert_linear(&log);
        let logged: Vec<&str> = log.iter().map(|e| e.snapshot.as_str()).collect();
        let want: Vec<&str> = self.expected.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(logged, want, "{when}: the ref log is not the pushes");
        let full = std::env::var("FERRY_TORTURE_FULL").as_deref() == Ok("1");
        let older = self.expected.len() - 1;
        let picks: Vec<usize> = if full || older <= RESTORES_PER_ROUND {
            (0..=older).collect()
        } else {
            let mut picks: Vec<usize> = (0..RESTORES_PER_ROUND)
                .map(|j| (round as usize * RESTORES_PER_ROUND + j) % older)
                .collect();
            picks.push(older);
            picks
        };
        for i in picks {
            self.restore(ferry, i);
        }
    }

    fn restore(&mut self, ferry: &Ferry, i: usize) {
        let (id, tree) = &self.expected[i];
        let spec = format!("ckpt@{id}");
        checks::assert_restores(self.ctx, ferry, &self.repo.url, &spec, tree);
        self.restores += 1;
    }

    /// After the last kill: every snapshot, with the tortured index and with a fresh one.
    fn restore_all(&mut self, ferry: &Ferry) {
        for i in 0..self.expected.len() {
            self.restore(ferry, i);
        }
        let fresh = self.ctx.ferry_with_index(&self.ctx.path("index"));
        checks::verify_read_data(&fresh, &self.repo.url);
        let (id, tree) = self.expected.last().expect("a snapshot");
        checks::assert_restores(
            self.ctx,
            &fresh,
            &self.repo.url,
            &format!("ckpt@{id}"),
            tree,
        );
    }
}

/// Runs `args` and SIGKILLs it after `delay` unless it finished first. Returns the run, and
/// how long it took when it finished on its own.
fn kill_after(ferry: &Ferry, args: &[&str], delay: Duration) -> (Run, Option<Duration>) {
    let started = Instant::now();
    let mut running = ferry.spawn(args);
    let mut finished = None;
    while started.elapsed() < delay {
        if running.has_exited() {
            finished = Some(started.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let run = if finished.is_some() || running.has_exited() {
        running.wait()
    } else {
        running.kill()
    };
    // A run that exited just before the signal reports its own status.
    let landed = run.status.code().is_none();
    assert!(
        landed || run.status.success(),
        "failed on its own before the kill: {run}"
    );
    let took = (!landed).then(|| finished.unwrap_or(delay));
    (run, took)
}

/// The time scale of the kills: the median of the last whole runs, so that kill points
/// follow the machine's load. Each delay is a seeded fraction of it.
struct Timing {
    recent: Vec<Duration>,
}

impl Timing {
    fn typical(&self) -> Duration {
        let mut last: Vec<Duration> = self.recent.iter().rev().take(5).copied().collect();
        last.sort();
        last[last.len() / 2]
    }

    /// A run killed after `wait`, or that finished on its own after `took`.
    fn note(&mut self, wait: Duration, took: Option<Duration>) {
        match took {
            Some(took) => self.recent.push(took),
            // Killed late in the expected run: runs take longer now.
            None if wait > self.typical().mul_f64(0.9) => self.recent.push(wait.mul_f64(1.1)),
            None => {}
        }
    }

    fn draw(&self, rng: &mut Rng) -> Duration {
        self.typical()
            .mul_f64((rng.next_u64() % 1000) as f64 / 1000.0)
    }
}

fn init_small(ferry: &Ferry, url: &str) {
    ferry.json(&["init", url, "--pack-size", "1MiB", "--chunk-avg", "256KiB"]);
}

fn push_kills(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let seed = seed(0x70_27_0e + backend as u64);
    let mut rng = Rng::new(seed);
    let ferry = ctx.ferry();
    let mut t = Tortured::new(&ctx, backend);
    let url = t.repo.url.clone();
    init_small(&ferry, &url);
    let src = ctx.dir("src");
    let args = ["push", s(&src), &url, "--name", "ckpt"];

    // Two whole pushes: the second, incremental like the tortured ones, sets the time scale.
    let mut timing = Timing { recent: Vec::new() };
    for round in 0..2 {
        write_version(&src, round);
        let started = Instant::now();
        let pushed = ferry.json(&args);
        timing.recent = vec![started.elapsed()];
        let tree = ctx.path("expected");
        checks::copy_tree(&src, &tree);
        t.expected.push((pushed_snapshot(&pushed), tree));
    }
    t.observe("after the first pushes");

    let mut points = Vec::new();
    for round in 2..=MAX_ROUNDS {
        if landed(&points) >= KILLS {
            break;
        }
        write_version(&src, round as u64);
        let tree = ctx.path("expected");
        checks::copy_tree(&src, &tree);
        let wait = timing.draw(&mut rng);
        let (_, took) = kill_after(&ferry, &args, wait);
        timing.note(wait, took);
        points.push((wait.as_millis(), took.is_none()));
        t.observe("after the kill");
        let rerun = ferry.json(&args);
        t.expected.push((pushed_snapshot(&rerun), tree));
        t.check(&ferry, &rerun, round);
    }
    t.restore_all(&ferry);
    report("push", backend, seed, timing.typical(), &points, t.restores);
    assert!(landed(&points) >= KILLS, "too few kills landed: {points:?}");
}

fn replicate_kills(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let seed = seed(0x4e_71_1c + backend as u64);
    let mut rng = Rng::new(seed);
    let ferry = ctx.ferry();
    let from = ctx.location(Backend::File);
    let mut t = Tortured::new(&ctx, backend);
    let to = t.repo.url.clone();
    init_small(&ferry, &from.url);
    let src = ctx.dir("src");
    let push = ["push", s(&src), &from.url, "--name", "ckpt"];
    let args = ["replicate", &from.url, &to];

    let new_version = |round: u64, t: &mut Tortured| {
        write_version(&src, round);
        let tree = ctx.path("expected");
        checks::copy_tree(&src, &tree);
        t.expected.push((pushed_snapshot(&ferry.json(&push)), tree));
    };
    // Two whole replications: the second, incremental like the tortured ones, sets the time
    // scale.
    let mut timing = Timing { recent: Vec::new() };
    for round in 0..2 {
        new_version(round, &mut t);
        let started = Instant::now();
        ferry.json(&args);
        timing.recent = vec![started.elapsed()];
    }
    t.observe("after the first replications");

    let mut points = Vec::new();
    for round in 2..=MAX_ROUNDS {
        if landed(&points) >= KILLS {
            break;
        }
        new_version(round as u64, &mut t);
        let wait = timing.draw(&mut rng);
        let (_, took) = kill_after(&ferry, &args, wait);
        timing.note(wait, took);
        points.push((wait.as_millis(), took.is_none()));
        t.observe("after the kill");
        let rerun = ferry.json(&args);
        assert!(uint(&rerun, "snapshots_copied") <= 1, "{rerun}");
        t.check(&ferry, &rerun, round);
    }
    t.restore_all(&ferry);
    report(
        "replicate",
        backend,
        seed,
        timing.typical(),
        &points,
        t.restores,
    );
    assert!(landed(&points) >= KILLS, "too few kills landed: {points:?}");
}

fn landed(points: &[(u128, bool)]) -> u32 {
    points.iter().filter(|(_, killed)| *killed).count() as u32
}

fn report(
    what: &str,
    backend: Backend,
    seed: u64,
    typical: Duration,
    points: &[(u128, bool)],
    restores: usize,
) {
    let landed: Vec<String> = points
        .iter()
        .filter(|(_, killed)| *killed)
        .map(|(ms, _)| ms.to_string())
        .collect();
    eprintln!(
        "torture {what} ({backend:?}, seed {seed}): typical run {} ms; {} kill points tried, {} \
         landed mid-run at ms [{}]; {restores} restores compared",
        typical.as_millis(),
        points.len(),
        landed.len(),
        landed.join(", ")
    );
}
