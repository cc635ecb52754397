//! The per-file policy of `ferry mirror`, pure: from what ferry recorded when it last mirrored
//! the file, the destination listing's entry, what a probe of the destination object found and
//! the file's cut, decide whether the file is unchanged, adopted, written whole or written as
//! a delta, against which base, and why. No I/O and no async: the orchestration (`file.rs`)
//! gathers the facts, asks [`probe_kind`] what to look at, and executes the [`Decision`].
//!
//! The rules, in order:
//! 1. the destination still carries the etag ferry got back, and the file's BLAKE3 is the one
//!    recorded: only the file's times moved, [`Decision::Unchanged`];
//! 2. the destination object already holds this content (its BLAKE3 metadata and size, or on
//!    a whole-file destination its bytes): [`Decision::Adopt`];
//! 3. otherwise the file is written. A delta (kept parts) needs a base: the recorded layout
//!    (S3) or the committed blocks (Azure) of an object whose probed etag is the one ferry
//!    recorded, or, with no record at all, the committed blocks of a blob an earlier mirror
//!    wrote (its block ids name their content). Without a base, or when the plan keeps
//!    nothing, the file is sent whole, and the note says why.

use std::collections::HashMap;

use crate::ids::FileHash;
use crate::index::MirrorRecord;
use crate::mirror::plan::{self, Base, Chunk, Plan};
use crate::mirror::Action;
use crate::ops::source::SourceFile;
use crate::store::delta::{BlockId, Limits, RemoteObject};

/// A destination listing's entry for the file's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub size: u64,
    /// Entity tag without quotes; empty when the store gave none.
    pub etag: String,
}

/// A file cut into chunks, with its whole-file hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub chunks: Vec<Chunk>,
    pub blake3: FileHash,
    /// The sum of the chunks' lengths.
    pub size: u64,
}

impl Cut {
    /// The whole-file BLAKE3 as lowercase hex, as stored in object metadata.
    pub fn hex(&self) -> String {
        self.blake3.to_hex()
    }
}

/// How the destination is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// Whole files through `object_store` (local folders, memory).
    Whole,
    /// A native delta store with these limits (S3, Azure).
    Delta(Limits),
}

/// What a decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// What ferry recorded when it last mirrored the file: none on a first mirror, a new
    /// machine or after the index was deleted.
    pub record: Option<&'a MirrorRecord>,
    /// The destination listing's entry at the file's key; none when there is no object.
    pub listed: Option<&'a Listed>,
    /// The file as it was just read.
    pub cut: &'a Cut,
    pub writer: Writer,
}

impl Facts<'_> {
    /// The destination object is the one ferry wrote: it still lists the etag ferry recorded.
    fn trusted(&self) -> bool {
        match (self.record, self.listed) {
            (Some(r), Some(l)) => !l.etag.is_empty() && l.etag == r.dest_etag,
            _ => false,
        }
    }

    /// Rule 1: only the file's times moved since ferry wrote the object.
    fn as_recorded(&self) -> bool {
        self.trusted() && self.record.is_some_and(|r| r.blake3 == self.cut.blake3)
    }
}

/// What to look at before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Nothing: the decision needs no more than the listing and the record.
    None,
    /// Ask the native store for the object's etag, size, BLAKE3 metadata and blocks.
    Native,
    /// Hash the object's bytes (whole-file destinations, when the sizes match).
    Hash,
}

/// What the look found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Nothing was looked at.
    Skipped,
    /// The native store's answer; none when the object is gone since the listing.
    Native(Option<RemoteObject>),
    /// The BLAKE3 (hex) of the object's bytes; none when it is gone since the listing.
    Hash(Option<String>),
}

/// Why a changed file is sent whole. The text is part of the report (`note`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The index holds no record of the object, and nothing of it is known by content.
    NoRecord,
    /// The object no longer carries the etag ferry recorded.
    ChangedSince,
    /// A base was known, but the plan keeps no part of it.
    NothingReused,
    /// The object changed between the plan and the write's commit.
    ChangedDuringWrite,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Note::NoRecord => "no record of the destination object's layout",
            Note::ChangedSince => "the destination object changed since ferry wrote it",
            Note::NothingReused => "no part of the previous object could be reused",
            Note::ChangedDuringWrite => "the destination object changed during the write",
        })
    }
}

/// What a delta was planned against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKind {
    /// Nothing: every part is sent.
    None,
    /// The blob's committed blocks, by id (Azure).
    Blocks,
    /// The chunk layout ferry recorded for the object (S3).
    Layout,
}

/// What to do with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The object is what ferry wrote and holds this content: record the file's new state
    /// (with the object's `etag`), write nothing. Counted as unchanged.
    Unchanged { etag: String },
    /// The object already holds exactly this content, though this mirror's record does not
    /// say so: record it (with its `etag`), write nothing.
    Adopt { etag: String },
    /// Write the file whole through `object_store` (a [`Writer::Whole`] destination):
    /// `Create`, or `Replace` with why, where the report says so.
    Whole { action: Action, note: Option<Note> },
    /// Write the file through the native store (a [`Writer::Delta`] destination).
    Delta(Delta),
}

/// A native write: the plan, what it keeps and how it is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// `Create`, `Update` (parts kept) or `Replace` (sent whole over an existing object).
    pub action: Action,
    /// Why a changed file is sent whole.
    pub note: Option<Note>,
    pub plan: Plan,
    /// What the plan was made against.
    pub base: BaseKind,
    /// The etag the kept parts are pinned to: set exactly when the plan keeps bytes.
    pub base_etag: Option<String>,
}

/// The no-read fast path: the source file is as it was mirrored (size, times, inode, source
/// etag) and the destination still lists the object ferry wrote, at the file's size.
pub fn unchanged(f: &SourceFile, record: Option<&MirrorRecord>, listed: Option<&Listed>) -> bool {
    match (record, listed) {
        (Some(r), Some(l)) => {
            r.size == f.size
                && r.mtime_ns == f.mtime_ns
                && r.ctime_ns == f.ctime_ns
                && r.ino == f.ino
                && r.source_etag == f.etag
                && l.size == f.size
                && !l.etag.is_empty()
                && l.etag == r.dest_etag
        }
        _ => false,
    }
}

/// What [`decide`] needs looked at for these facts.
pub fn probe_kind(facts: &Facts) -> ProbeKind {
    if facts.as_recorded() {
        return ProbeKind::None;
    }
    match (facts.writer, facts.listed) {
        (Writer::Delta(_), Some(_)) => ProbeKind::Native,
        (Writer::Whole, Some(l)) if l.size == facts.cut.size => ProbeKind::Hash,
        _ => ProbeKind::None,
    }
}

/// Decides what to do with one file (see the module's rules).
pub fn decide(facts: &Facts, probe: &Probe) -> Decision {
    if let (true, Some(l)) = (facts.as_recorded(), facts.listed) {
        return Decision::Unchanged {
            etag: l.etag.clone(),
        };
    }
    let remote = match probe {
        Probe::Native(p) => p.as_ref(),
        Probe::Skipped | Probe::Hash(_) => None,
    };
    if let Some(etag) = adoptable(facts, probe) {
        return Decision::Adopt { etag };
    }
    match facts.writer {
        Writer::Whole => {
            let (action, note) = sent_whole(facts, false);
            Decision::Whole { action, note }
        }
        Writer::Delta(limits) => Decision::Delta(delta(facts, remote, &limits)),
    }
}

/// After the object changed during a delta write: the file again, whole, pinned to nothing.
pub fn after_changed_during_write(cut: &Cut, limits: &Limits) -> Delta {
    Delta {
        action: Action::Replace,
        note: Some(Note::ChangedDuringWrite),
        plan: plan::plan(&cut.chunks, Base::None, limits),
        base: BaseKind::None,
        base_etag: None,
    }
}

/// Rule 2: the etag to record when the object already holds this content.
fn adoptable(facts: &Facts, probe: &Probe) -> Option<String> {
    let cut = facts.cut;
    match probe {
        Probe::Native(Some(p)) => (p.size == cut.size
            && p.blake3.as_deref() == Some(cut.hex().as_str()))
        .then(|| p.etag.clone()),
        Probe::Hash(Some(have)) => {
            let listed = facts.listed.filter(|l| l.size == cut.size)?;
            (*have == cut.hex()).then(|| listed.etag.clone())
        }
        Probe::Native(None) | Probe::Hash(None) | Probe::Skipped => None,
    }
}

/// Action and note of a file sent with nothing kept. `delta_store`: whether keeping parts
/// was possible at all (a whole-file destination has nothing to explain for a changed file).
fn sent_whole(facts: &Facts, delta_store: bool) -> (Action, Option<Note>) {
    match (facts.listed, facts.record) {
        (None, _) => (Action::Create, None),
        (Some(_), None) => (Action::Replace, Some(Note::NoRecord)),
        (Some(_), Some(_)) if !facts.trusted() || delta_store => {
            (Action::Replace, Some(Note::ChangedSince))
        }
        (Some(_), Some(_)) => (Action::Replace, None),
    }
}

/// Rule 3 on a native store: plan against the base, if there is one.
fn delta(facts: &Facts, remote: Option<&RemoteObject>, limits: &Limits) -> Delta {
    let chunks = &facts.cut.chunks;
    let Some((kept, etag)) = base_of(facts, remote, limits) else {
        let (action, note) = sent_whole(facts, true);
        return Delta {
            action,
            note,
            plan: plan::plan(chunks, Base::None, limits),
            base: BaseKind::None,
            base_etag: None,
        };
    };
    let plan = plan::plan(chunks, kept.base(), limits);
    let (action, note, base_etag) = if plan.has_keeps() {
        (Action::Update, None, Some(etag))
    } else {
        (Action::Replace, Some(Note::NothingReused), None)
    };
    Delta {
        action,
        note,
        plan,
        base: kept.kind(),
        base_etag,
    }
}

/// What the destination holds of a previous version, for [`plan::plan`].
enum Kept {
    /// The blob's committed blocks, id → size.
    Blocks(HashMap<BlockId, u64>),
    /// The chunks ferry recorded for the object, in order.
    Layout(Vec<Chunk>),
}

impl Kept {
    fn base(&self) -> Base<'_> {
        match self {
            Kept::Blocks(blocks) => Base::Blocks(blocks),
            Kept::Layout(chunks) => Base::Layout(chunks),
        }
    }

    fn kind(&self) -> BaseKind {
        match self {
            Kept::Blocks(_) => BaseKind::Blocks,
            Kept::Layout(_) => BaseKind::Layout,
        }
    }
}

/// The base a delta may keep parts of, and the etag that pins it: the recorded layout (S3)
/// or committed blocks (Azure) of the object ferry wrote (probed etag = recorded etag), or,
/// with no record, the committed blocks of a blob with BLAKE3 metadata (an earlier
/// mirror's: its block ids name their content).
fn base_of(
    facts: &Facts,
    remote: Option<&RemoteObject>,
    limits: &Limits,
) -> Option<(Kept, String)> {
    let p = remote.filter(|p| !p.etag.is_empty())?;
    let kept = match facts.record {
        Some(r) if facts.trusted() && p.etag == r.dest_etag => {
            if limits.keep_by_block_id {
                Kept::Blocks(p.committed())
            } else {
                Kept::Layout(
                    r.chunks
                        .iter()
                        .map(|&(hash, len)| Chunk { hash, len })
                        .collect(),
                )
            }
        }
        None if facts.listed.is_some() && limits.keep_by_block_id && p.blake3.is_some() => {
            Kept::Blocks(p.committed())
        }
        _ => return None,
    };
    Some((kept, p.etag.clone()))
}

#[cfg(test)]
mod tests;
