//! Tests of `decide`: its invariants and agreement with the policy as it was before the split
//! (property tests), the fast path, and the notes the report shows.

use proptest::prelude::*;

use super::*;
use crate::store::delta::WriteRequest;

const MIB: u64 = 1 << 20;
/// The etag ferry recorded for the object it wrote.
const OURS: &str = "etag-ours";
/// The etag of an object someone else wrote since.
const FOREIGN: &str = "etag-foreign";

fn chunk(seed: u64, len: u64) -> Chunk {
    Chunk {
        hash: *blake3::hash(&seed.to_le_bytes()).as_bytes(),
        len,
    }
}

/// A file of `n` chunks of about 1 MiB, chunk i named by `seed + i`.
fn file(n: u64, seed: u64) -> Vec<Chunk> {
    (0..n)
        .map(|i| chunk(seed + i, MIB + (i % 7) * 1000))
        .collect()
}

/// The cut of a file made of `chunks`; its BLAKE3 stands for the content (the same chunk
/// list is the same content).
fn cut_of(chunks: &[Chunk]) -> Cut {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(&c.hash);
        h.update(&c.len.to_le_bytes());
    }
    Cut {
        chunks: chunks.to_vec(),
        blake3: FileHash::from(h.finalize()),
        size: chunks.iter().map(|c| c.len).sum(),
    }
}

/// What ferry recorded after writing `old` at [`OURS`].
fn record_of(old: &Cut) -> MirrorRecord {
    MirrorRecord {
        size: old.size,
        mtime_ns: 1_000,
        ctime_ns: 2_000,
        ino: 7,
        source_etag: None,
        dest_etag: OURS.into(),
        blake3: old.blake3,
        chunks: old.chunks.iter().map(|c| (c.hash, c.len)).collect(),
    }
}

/// The source file `record` was made from.
fn source_file(record: &MirrorRecord) -> SourceFile {
    SourceFile {
        rel: "w.bin".into(),
        size: record.size,
        mtime_ns: record.mtime_ns,
        mode: 0o644,
        etag: record.source_etag.clone(),
        ctime_ns: record.ctime_ns,
        ino: record.ino,
    }
}

/// A native probe's answer for an object holding `content`'s blocks (Azure) at `etag`.
fn remote(content: &Cut, etag: &str, blake3: Option<String>, limits: &Limits) -> RemoteObject {
    let blocks = if limits.keep_by_block_id {
        plan::blocks(&content.chunks, limits)
            .into_iter()
            .map(|b| (Some(b.id), b.range.end - b.range.start))
            .collect()
    } else {
        Vec::new()
    };
    RemoteObject {
        etag: etag.into(),
        size: content.size,
        blake3,
        blocks,
    }
}

/// The policy as `FileCtx::mirror_file` wrote it before the split, its action and note
/// rewritten in four steps, kept as an oracle: [`decide`] must agree with it on every input.
fn policy_before_the_split(facts: &Facts, probe: &Probe) -> Decision {
    let (cut, rec) = (facts.cut, facts.record);
    let hex = cut.hex();
    let remote = facts.listed.map(|l| (l.size, l.etag.clone()));
    let remote_etag = remote.as_ref().map(|(_, e)| e.clone());
    let native = match facts.writer {
        Writer::Delta(limits) => Some(limits),
        Writer::Whole => None,
    };
    let trusted = match (&rec, &remote_etag) {
        (Some(r), Some(e)) => !e.is_empty() && *e == r.dest_etag,
        _ => false,
    };
    if trusted && rec.is_some_and(|r| r.blake3 == cut.blake3) {
        let etag = remote_etag.unwrap_or_default();
        return Decision::Unchanged { etag };
    }
    let probe_obj = match probe {
        Probe::Native(p) => p.clone(),
        _ => None,
    };
    let same = match (&probe_obj, &native, &remote) {
        (Some(p), _, _) => p.blake3.as_deref() == Some(hex.as_str()) && p.size == cut.size,
        (None, None, Some((size, _))) if *size == cut.size => {
            matches!(probe, Probe::Hash(Some(h)) if *h == hex)
        }
        _ => false,
    };
    if same {
        let etag = match &probe_obj {
            Some(p) => p.etag.clone(),
            None => remote_etag.clone().unwrap_or_default(),
        };
        return Decision::Adopt { etag };
    }
    let (action, note) = match (&remote, &rec) {
        (None, _) => (Action::Create, None),
        (Some(_), None) => (Action::Replace, Some(Note::NoRecord)),
        (Some(_), Some(_)) if !trusted => (Action::Replace, Some(Note::ChangedSince)),
        (Some(_), Some(_)) => (Action::Update, None),
    };
    let Some(limits) = native else {
        let action = match action {
            Action::Update => Action::Replace,
            other => other,
        };
        return Decision::Whole { action, note };
    };
    let old_chunks: Vec<Chunk>;
    let committed: HashMap<BlockId, u64>;
    let (base, kind, base_etag) = match (&action, &probe_obj, &rec) {
        (Action::Update, Some(p), Some(r)) if !p.etag.is_empty() && p.etag == r.dest_etag => {
            if limits.keep_by_block_id {
                committed = p.committed();
                (
                    Base::Blocks(&committed),
                    BaseKind::Blocks,
                    Some(p.etag.clone()),
                )
            } else {
                old_chunks = r
                    .chunks
                    .iter()
                    .map(|&(hash, len)| Chunk { hash, len })
                    .collect();
                (
                    Base::Layout(&old_chunks),
                    BaseKind::Layout,
                    Some(p.etag.clone()),
                )
            }
        }
        (Action::Replace, Some(p), None)
            if limits.keep_by_block_id && p.blake3.is_some() && !p.etag.is_empty() =>
        {
            committed = p.committed();
            (
                Base::Blocks(&committed),
                BaseKind::Blocks,
                Some(p.etag.clone()),
            )
        }
        _ => (Base::None, BaseKind::None, None),
    };
    let (mut action, mut note) = match (action, &base) {
        (Action::Update, Base::None) => (Action::Replace, Some(Note::ChangedSince)),
        (Action::Replace, Base::Blocks(_)) => (Action::Update, None),
        (action, _) => (action, note),
    };
    let plan = plan::plan(&cut.chunks, base, &limits);
    if plan.kept == 0 && action == Action::Update {
        action = Action::Replace;
        note = Some(Note::NothingReused);
    }
    Decision::Delta(Delta {
        action,
        note,
        base: kind,
        base_etag: base_etag.filter(|_| plan.has_keeps()),
        plan,
    })
}

/// One file's situation: the previous and the current version, what the index recorded,
/// what the destination lists and holds, and how it is written.
#[derive(Debug, Clone)]
struct Case {
    old: Cut,
    new: Cut,
    recorded: bool,
    /// The listing's etag, or no object listed.
    listed_etag: Option<&'static str>,
    listed_size_is_new: bool,
    /// The probed object: its etag and BLAKE3 metadata (0 none, 1 old, 2 new, 3 other),
    /// or gone since the listing.
    probed: Option<(&'static str, u8)>,
    probed_size_is_new: bool,
    writer: Writer,
}

impl Case {
    fn record(&self) -> Option<MirrorRecord> {
        self.recorded.then(|| record_of(&self.old))
    }

    fn listed(&self) -> Option<Listed> {
        self.listed_etag.map(|etag| Listed {
            size: if self.listed_size_is_new {
                self.new.size
            } else {
                self.old.size
            },
            etag: etag.into(),
        })
    }

    fn blake3(&self, which: u8) -> Option<String> {
        match which {
            1 => Some(self.old.hex()),
            2 => Some(self.new.hex()),
            3 => Some("00".repeat(32)),
            _ => None,
        }
    }

    /// What the look [`probe_kind`] asks for finds.
    fn probe(&self, kind: ProbeKind) -> Probe {
        match (kind, self.writer, self.probed) {
            (ProbeKind::None, _, _) => Probe::Skipped,
            (ProbeKind::Native, Writer::Delta(limits), Some((etag, which))) => {
                let content = if self.probed_size_is_new {
                    &self.new
                } else {
                    &self.old
                };
                let blake3 = self.blake3(which);
                Probe::Native(Some(remote(content, etag, blake3, &limits)))
            }
            (ProbeKind::Native, _, _) => Probe::Native(None),
            (ProbeKind::Hash, _, Some((_, which))) => Probe::Hash(self.blake3(which.max(1))),
            (ProbeKind::Hash, _, None) => Probe::Hash(None),
        }
    }
}

/// The current version: the previous one edited (chunks inserted, removed, replaced), the
/// same, or rewritten through.
fn arb_versions() -> impl Strategy<Value = (Cut, Cut)> {
    (
        1u64..24,
        any::<u64>(),
        prop::collection::vec((0usize..30, 0u8..3), 0..4),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(n, seed, edits, rewritten)| {
            let old = file(n, seed % 1_000_000);
            if rewritten {
                let new = file(n + edits.len() as u64, seed % 1_000_000 + 2_000_000);
                return (cut_of(&old), cut_of(&new));
            }
            let mut new = old.clone();
            for (k, (at, kind)) in edits.into_iter().enumerate() {
                let at = at % (new.len() + 1);
                let fresh = chunk(seed ^ (0xdead_0000 + k as u64), MIB / 2 + k as u64);
                match kind {
                    0 => new.insert(at, fresh),
                    1 if at < new.len() && new.len() > 1 => {
                        new.remove(at);
                    }
                    _ if at < new.len() => new[at] = fresh,
                    _ => new.push(fresh),
                }
            }
            (cut_of(&old), cut_of(&new))
        })
}

fn arb_case() -> impl Strategy<Value = Case> {
    let etag = prop::sample::select(vec![OURS, FOREIGN, ""]);
    (
        arb_versions(),
        any::<bool>(),
        prop::option::weighted(0.85, (etag.clone(), any::<bool>())),
        prop::option::weighted(0.9, (etag, 0u8..4, any::<bool>())),
        prop::sample::select(vec![
            Writer::Whole,
            Writer::Delta(Limits::S3),
            Writer::Delta(Limits::AZURE),
        ]),
    )
        .prop_map(|((old, new), recorded, listed, probed, writer)| Case {
            old,
            new,
            recorded,
            listed_etag: listed.map(|(e, _)| e),
            listed_size_is_new: listed.is_some_and(|(_, n)| n),
            probed: probed.map(|(e, b, _)| (e, b)),
            probed_size_is_new: probed.is_some_and(|(_, _, n)| n),
            writer,
        })
}

/// Checks what every decision must hold, whatever the inputs.
fn check_invariants(facts: &Facts, probe: &Probe, decision: &Decision) {
    let trusted = facts.trusted();
    let probed = match probe {
        Probe::Native(p) => p.as_ref(),
        _ => None,
    };
    match decision {
        Decision::Unchanged { etag } => {
            let (r, l) = (facts.record.unwrap(), facts.listed.unwrap());
            assert!(trusted && r.blake3 == facts.cut.blake3 && *etag == l.etag);
        }
        Decision::Adopt { .. } => {
            let hex = facts.cut.hex();
            let same = match probe {
                Probe::Native(Some(p)) => {
                    p.blake3.as_deref() == Some(hex.as_str()) && p.size == facts.cut.size
                }
                Probe::Hash(Some(h)) => *h == hex,
                _ => false,
            };
            assert!(same, "adopted an object that does not hold this content");
        }
        Decision::Whole { action, note } => {
            assert_eq!(facts.writer, Writer::Whole);
            assert_ne!(*action, Action::Update, "a whole write keeps nothing");
            assert_eq!(*action == Action::Create, facts.listed.is_none());
            // The note says why a changed file was not kept: no record, or a foreign object.
            let why = *action == Action::Replace && (facts.record.is_none() || !trusted);
            assert_eq!(note.is_some(), why, "{action:?} {note:?}");
        }
        Decision::Delta(d) => {
            let Writer::Delta(limits) = facts.writer else {
                panic!("a delta for a whole-file destination");
            };
            assert_eq!(d.plan.size, facts.cut.size);
            assert_eq!(d.action == Action::Create, facts.listed.is_none());
            // Kept bytes ⇔ an update ⇔ pinned to the etag of the object they come from.
            assert_eq!(d.plan.has_keeps(), d.action == Action::Update, "{d:?}");
            assert_eq!(d.base_etag.is_some(), d.plan.has_keeps(), "{d:?}");
            // Only an update goes without a note: Replace always says why.
            assert_eq!(d.note.is_none(), d.action != Action::Replace, "{d:?}");
            if let Some(etag) = &d.base_etag {
                let p = probed.expect("kept parts of an object nobody probed");
                assert!(!etag.is_empty() && *etag == p.etag);
                match facts.record {
                    Some(r) => assert!(trusted && r.dest_etag == *etag),
                    None => assert!(d.base == BaseKind::Blocks && p.blake3.is_some()),
                }
                let req = WriteRequest {
                    key: "w.bin",
                    parts: &d.plan.parts,
                    size: d.plan.size,
                    base_etag: Some(etag),
                    blake3: &facts.cut.hex(),
                };
                assert!(req.check(&limits).is_ok(), "{d:?}");
            }
            let expected_base = match limits.keep_by_block_id {
                true => BaseKind::Blocks,
                false => BaseKind::Layout,
            };
            assert!(d.base == BaseKind::None || d.base == expected_base, "{d:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decisions_hold_their_invariants_and_match_the_old_policy(case in arb_case()) {
        let record = case.record();
        let listed = case.listed();
        let facts = Facts {
            record: record.as_ref(),
            listed: listed.as_ref(),
            cut: &case.new,
            writer: case.writer,
        };
        let kind = probe_kind(&facts);
        let probe = case.probe(kind);
        let decision = decide(&facts, &probe);
        check_invariants(&facts, &probe, &decision);
        prop_assert_eq!(&decision, &policy_before_the_split(&facts, &probe));

        // An object someone else wrote since (its listed or probed etag is not the one ferry
        // recorded) never gets a delta against what ferry recorded.
        let foreign = listed.as_ref().is_some_and(|l| l.etag != OURS)
            || matches!(&probe, Probe::Native(Some(p)) if p.etag != OURS);
        if record.is_some() && foreign {
            match &decision {
                Decision::Delta(d) => {
                    prop_assert!(!d.plan.has_keeps() && d.action != Action::Update);
                    prop_assert!(d.action == Action::Create || d.note == Some(Note::ChangedSince));
                }
                Decision::Whole { action, note } => prop_assert!(
                    *action == Action::Create || *note == Some(Note::ChangedSince)
                ),
                Decision::Adopt { .. } => {}
                Decision::Unchanged { .. } => prop_assert!(false, "trusted a foreign object"),
            }
        }
        // Nothing listed: nothing to look at, nothing to keep.
        if listed.is_none() {
            prop_assert_eq!(kind, ProbeKind::None);
            let created = match &decision {
                Decision::Whole { action, .. } => *action == Action::Create,
                Decision::Delta(d) => d.action == Action::Create && d.plan.sent == case.new.size,
                _ => false,
            };
            prop_assert!(created, "{:?}", decision);
        }
    }

    #[test]
    fn a_file_as_recorded_is_unchanged_whatever_the_probe(
        (old, _) in arb_versions(),
        writer in prop::sample::select(vec![
            Writer::Whole,
            Writer::Delta(Limits::S3),
            Writer::Delta(Limits::AZURE),
        ]),
    ) {
        let record = record_of(&old);
        let listed = Listed { size: old.size, etag: OURS.into() };
        prop_assert!(unchanged(&source_file(&record), Some(&record), Some(&listed)));
        let facts = Facts { record: Some(&record), listed: Some(&listed), cut: &old, writer };
        prop_assert_eq!(probe_kind(&facts), ProbeKind::None);
        let foreign = remote(&old, FOREIGN, None, &Limits::AZURE);
        for probe in [Probe::Skipped, Probe::Native(None), Probe::Native(Some(foreign))] {
            prop_assert_eq!(
                decide(&facts, &probe),
                Decision::Unchanged { etag: OURS.into() }
            );
        }
    }

    #[test]
    fn the_fast_path_needs_every_field_to_match(field in 0usize..9) {
        let record = record_of(&cut_of(&file(3, 5)));
        let mut f = source_file(&record);
        let mut listed = Listed { size: record.size, etag: OURS.into() };
        match field {
            0 => f.size += 1,
            1 => f.mtime_ns += 1,
            2 => f.ctime_ns += 1,
            3 => f.ino += 1,
            4 => f.etag = Some("source-etag".into()),
            5 => listed.size += 1,
            6 => listed.etag = String::new(),
            7 => listed.etag = FOREIGN.into(),
            _ => {
                prop_assert!(!unchanged(&f, None, Some(&listed)));
                prop_assert!(!unchanged(&f, Some(&record), None));
                return Ok(());
            }
        }
        prop_assert!(!unchanged(&f, Some(&record), Some(&listed)));
    }
}

#[test]
fn notes_read_as_the_report_has_always_said() {
    for (note, text) in [
        (
            Note::NoRecord,
            "no record of the destination object's layout",
        ),
        (
            Note::ChangedSince,
            "the destination object changed since ferry wrote it",
        ),
        (
            Note::NothingReused,
            "no part of the previous object could be reused",
        ),
        (
            Note::ChangedDuringWrite,
            "the destination object changed during the write",
        ),
    ] {
        assert_eq!(note.to_string(), text);
    }
}

/// The scenarios of `tests/it/mirror.rs`, decided without a server.
#[test]
fn a_changed_middle_is_an_update_on_s3_and_azure_and_a_replace_on_a_folder() {
    let old = cut_of(&file(20, 0));
    let mut chunks = old.chunks.clone();
    for (i, c) in chunks[8..11].iter_mut().enumerate() {
        *c = chunk(10_000 + i as u64, c.len);
    }
    let new = cut_of(&chunks);
    let record = record_of(&old);
    let listed = Listed {
        size: old.size,
        etag: OURS.into(),
    };
    for limits in [Limits::S3, Limits::AZURE] {
        let facts = Facts {
            record: Some(&record),
            listed: Some(&listed),
            cut: &new,
            writer: Writer::Delta(limits),
        };
        assert_eq!(probe_kind(&facts), ProbeKind::Native);
        let ours = remote(&old, OURS, Some(old.hex()), &limits);
        let Decision::Delta(d) = decide(&facts, &Probe::Native(Some(ours))) else {
            panic!("no delta on {limits:?}");
        };
        assert_eq!((d.action, d.note), (Action::Update, None));
        assert_eq!(d.base_etag.as_deref(), Some(OURS));
        assert!(d.plan.kept > new.size / 2, "{:?}", d.plan);

        // The object changed between the listing and the probe: sent whole, with why.
        let theirs = remote(&old, FOREIGN, Some(old.hex()), &limits);
        let Decision::Delta(d) = decide(&facts, &Probe::Native(Some(theirs))) else {
            panic!("no write on {limits:?}");
        };
        assert_eq!(
            (d.action, d.note, d.plan.kept),
            (Action::Replace, Some(Note::ChangedSince), 0)
        );
    }
    let facts = Facts {
        record: Some(&record),
        listed: Some(&listed),
        cut: &new,
        writer: Writer::Whole,
    };
    assert_eq!(probe_kind(&facts), ProbeKind::Hash);
    assert_eq!(
        decide(&facts, &Probe::Hash(Some(old.hex()))),
        Decision::Whole {
            action: Action::Replace,
            note: None
        }
    );
}

/// A lost index: the object's BLAKE3 metadata says it holds this content (adopted), and a
/// changed file keeps the blob's blocks on Azure but goes whole on S3 (no layout recorded).
#[test]
fn without_a_record_azure_keeps_blocks_by_content_and_s3_sends_whole() {
    let old = cut_of(&file(20, 0));
    let mut chunks = old.chunks.clone();
    chunks[10] = chunk(99_999, chunks[10].len);
    let new = cut_of(&chunks);
    let listed = Listed {
        size: old.size,
        etag: FOREIGN.into(),
    };
    for (limits, action, note) in [
        (Limits::AZURE, Action::Update, None),
        (Limits::S3, Action::Replace, Some(Note::NoRecord)),
    ] {
        let ours = remote(&old, FOREIGN, Some(old.hex()), &limits);
        let facts = |cut| Facts {
            record: None,
            listed: Some(&listed),
            cut,
            writer: Writer::Delta(limits),
        };
        assert_eq!(
            decide(&facts(&old), &Probe::Native(Some(ours.clone()))),
            Decision::Adopt {
                etag: FOREIGN.into()
            }
        );
        let Decision::Delta(d) = decide(&facts(&new), &Probe::Native(Some(ours))) else {
            panic!("no write on {limits:?}");
        };
        assert_eq!((d.action, d.note), (action, note), "{limits:?}");
    }
}

#[test]
fn a_write_the_object_changed_under_is_redone_whole() {
    let cut = cut_of(&file(12, 3));
    for limits in [Limits::S3, Limits::AZURE] {
        let d = after_changed_during_write(&cut, &limits);
        assert_eq!(
            (d.action, d.note, d.base_etag, d.plan.kept, d.plan.sent),
            (
                Action::Replace,
                Some(Note::ChangedDuringWrite),
                None,
                0,
                cut.size
            )
        );
    }
}

/// The generated cases reach every kind of decision, so the properties above are not
/// vacuous: S3 and Azure updates (with and without a record), adoptions, unchanged files,
/// creations and every note.
#[test]
fn generated_cases_reach_every_decision() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    use std::collections::BTreeSet;

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let strategy = arb_case();
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let (record, listed) = (case.record(), case.listed());
        let facts = Facts {
            record: record.as_ref(),
            listed: listed.as_ref(),
            cut: &case.new,
            writer: case.writer,
        };
        let probe = case.probe(probe_kind(&facts));
        let label = match (decide(&facts, &probe), case.writer) {
            (Decision::Unchanged { .. }, _) => "unchanged".to_string(),
            (Decision::Adopt { .. }, _) => "adopt".to_string(),
            (Decision::Whole { action, note }, _) => format!("whole {action:?} {note:?}"),
            (Decision::Delta(d), Writer::Delta(l)) => format!(
                "{} {:?} {:?} record={}",
                if l.keep_by_block_id { "azure" } else { "s3" },
                d.action,
                d.note,
                record.is_some()
            ),
            (Decision::Delta(_), Writer::Whole) => "delta on a folder".to_string(),
        };
        seen.insert(label);
    }
    for want in [
        "unchanged",
        "adopt",
        "whole Create None",
        "whole Replace None",
        "whole Replace Some(NoRecord)",
        "whole Replace Some(ChangedSince)",
        "s3 Update None record=true",
        "s3 Replace Some(ChangedSince) record=true",
        "s3 Replace Some(NoRecord) record=false",
        "s3 Replace Some(NothingReused) record=true",
        "azure Update None record=true",
        "azure Update None record=false",
        "azure Create None record=false",
        "azure Replace Some(NothingReused) record=false",
        "azure Replace Some(NothingReused) record=true",
    ] {
        assert!(
            seen.contains(want),
            "never generated: {want}; seen {seen:#?}"
        );
    }
}
