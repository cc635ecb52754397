//! A dry run of a replication: plans it as the real run does and measures what it would send
//! from the source's pack indexes, without downloading a frame or writing anything.
//!
//! The frames a replication copies keep their stored bytes, so their lengths come from the
//! local index's chunk locations; the delta bases they drag along come from the source's pack
//! indexes (read once per pack holding a delta frame to copy). Into a target older than the
//! delta format a delta frame would be stored whole, recompressed: it is counted at its raw
//! length, an upper bound.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::index::{Index, RepoIndex};
use crate::ops::egress::{ref_entry_len, DryRun, DryTarget, Prices};
use crate::ops::fetch::locate;
use crate::ops::ref_log::ref_log;
use crate::ops::replicate::{plan_refs, wanted_snapshots, ReplicateReport};
use crate::ops::sync::{sync_index, Presence};
use crate::ops::uploader::PackUploader;
use crate::ops::OpError;
use crate::repo::config::DELTA_VERSION;
use crate::repo::Repository;

/// Forecasts [`crate::ops::replicate::replicate`] of the refs `names` (all when empty) from
/// `from` to `to` (`created`: the run would create it), priced by `prices`. Writes nothing to
/// either repository; the local index may learn their pack indexes.
pub async fn replicate_dry(
    from: &Repository,
    (to, created): (&Repository, bool),
    names: &[String],
    index: &Index,
    prices: &Prices,
) -> Result<ReplicateReport, OpError> {
    let started = Instant::now();
    crate::ops::targets::check_alike(from, to)?;
    let from_index = index.repo(from.id())?;
    let to_index = index.repo(to.id())?;
    sync_index(from, &from_index).await?;
    let to_presence = sync_index(to, &to_index).await?;
    let plans = plan_refs(from, to, names, (&from_index, &to_index)).await?;
    let present: HashSet<SnapshotId> = if plans.iter().all(|p| p.snapshots.is_empty()) {
        HashSet::new()
    } else {
        to.list_snapshots().await?.into_iter().collect()
    };
    let wanted = wanted_snapshots(&plans, &present);

    let mut m = Measure {
        from,
        from_index: &from_index,
        to_presence: &to_presence,
        uploader: PackUploader::new(to.clone(), to_index.clone(), 1).dry_run(true),
        whole: to.config().version < DELTA_VERSION,
        deltas: from.config().version >= DELTA_VERSION,
        bases: HashMap::new(),
        sent: HashSet::new(),
        downloaded: 0,
    };
    let mut bytes_snapshots = 0;
    for id in &wanted {
        let bytes = from.read_snapshot_bytes(id).await?;
        bytes_snapshots += bytes.len() as u64;
        let snap = from.decode_snapshot(id, &bytes)?;
        let mut need = Vec::new();
        for c in snap.chunks() {
            if m.lacks(&c.0)? {
                need.push(c.0);
            }
        }
        m.copy(need).await?;
    }
    let (downloaded, chunks_copied) = (m.downloaded, m.sent.len() as u64);
    let upload = m.uploader.finish().await?;

    let mut bytes_refs = 0;
    let mut refs_advanced = 0;
    for p in &plans {
        let head = ref_log(to, &to_index, &p.name).await?.last().map(|e| e.seq);
        for (i, s) in p.snapshots.iter().enumerate() {
            let seq = head.map_or(1, |h| h + 1) + i as u64;
            bytes_refs += ref_entry_len(&p.name, seq, *s);
            refs_advanced += 1;
        }
    }
    let config = if created {
        to.config().encode().len() as u64
    } else {
        0
    };
    let sizes = [upload.bytes_uploaded, bytes_snapshots, bytes_refs, config];
    let forecast = DryTarget::priced(to.url(), sizes, prices.quote(&from.url(), &to.url()));
    Ok(ReplicateReport {
        from: from.url(),
        to: to.url(),
        refs: plans.iter().map(|p| p.name.clone()).collect(),
        snapshots_copied: wanted.len() as u64,
        chunks_copied,
        bytes_downloaded: downloaded,
        chunks_delta: 0,
        bytes_saved_by_deltas: 0,
        upload,
        refs_advanced,
        resealed: false,
        shard: None,
        duration_secs: started.elapsed().as_secs_f64(),
        dry_run: Some(DryRun::of(vec![forecast])),
    })
}

/// The chunks a dry replication would copy, measured into a dry uploader.
struct Measure<'a> {
    from: &'a Repository,
    from_index: &'a RepoIndex,
    to_presence: &'a Presence,
    uploader: PackUploader,
    /// The target predates delta frames: they would be stored whole.
    whole: bool,
    /// The source may hold delta frames (its pack indexes list their bases).
    deltas: bool,
    /// Per source pack read so far: its delta frames' bases.
    bases: HashMap<PackId, HashMap<ChunkId, ChunkId>>,
    /// Chunks counted as copied.
    sent: HashSet<ChunkId>,
    downloaded: u64,
}

impl Measure<'_> {
    /// Whether the target lacks `c` and it was not counted yet; counts it if so.
    fn lacks(&mut self, c: &ChunkId) -> Result<bool, OpError> {
        Ok(!self.sent.contains(c) && !self.to_presence.has(c)? && self.sent.insert(*c))
    }

    /// Measures `need`, in the real run's order (by pack and offset), then the delta bases
    /// the target lacks, round by round as the real run copies them.
    async fn copy(&mut self, mut need: Vec<ChunkId>) -> Result<(), OpError> {
        while !need.is_empty() {
            let mut locations = locate(self.from_index, self.from, need)?;
            locations.sort_by_key(|l| (l.pack, l.entry.offset));
            let mut next = Vec::new();
            for l in locations {
                let e = l.entry;
                self.downloaded += e.frame_len as u64;
                let base = self.base_of(&l.pack, &e.chunk).await?;
                match (base, self.whole) {
                    (Some(_), true) => self.uploader.add_measured(e.raw_len, e.raw_len, false),
                    (Some(b), false) => {
                        self.uploader.add_measured(e.frame_len, e.raw_len, true);
                        next.push(b);
                    }
                    (None, _) => self.uploader.add_measured(e.frame_len, e.raw_len, false),
                }
            }
            need = Vec::new();
            for b in next {
                if self.lacks(&b)? {
                    need.push(b);
                }
            }
        }
        Ok(())
    }

    /// The delta base of `chunk` in source pack `pack`, if its frame there is a delta frame.
    async fn base_of(
        &mut self,
        pack: &PackId,
        chunk: &ChunkId,
    ) -> Result<Option<ChunkId>, OpError> {
        if !self.deltas {
            return Ok(None);
        }
        if !self.bases.contains_key(pack) {
            let idx = self.from.read_pack_index(pack).await?;
            let map = idx.bases.iter().map(|b| (b.chunk, b.base)).collect();
            self.bases.insert(*pack, map);
        }
        Ok(self.bases.get(pack).and_then(|m| m.get(chunk)).copied())
    }
}
