//! Delta bases from the earlier versions in the pull folder: a delta frame of the new step is
//! decoded against its base read from a local file (checked against the base's id), so the
//! store serves only the delta frames; a base with no good local copy is read from the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::{ChunkId, Naming};
use crate::ops::delta_base::LocalBases;
use crate::ops::OpError;

use super::layout::LocalChunk;
use super::writer::read_local;

/// The chunks of the complete versions, as delta bases, counting what still came from the
/// store.
pub(super) struct VersionBases<'a> {
    sources: &'a HashMap<ChunkId, LocalChunk>,
    /// How the repository names chunks (a local copy is checked against its id so).
    naming: Naming,
    from_store: AtomicU64,
    local: AtomicU64,
}

impl<'a> VersionBases<'a> {
    pub(super) fn new(sources: &'a HashMap<ChunkId, LocalChunk>, naming: Naming) -> Self {
        VersionBases {
            sources,
            naming,
            from_store: AtomicU64::new(0),
            local: AtomicU64::new(0),
        }
    }

    /// Bytes of base frames read from the store (no good local copy).
    pub(super) fn read_from_store_bytes(&self) -> u64 {
        self.from_store.load(Ordering::Relaxed)
    }

    /// Bytes of bases taken from local versions.
    pub(super) fn local_bytes(&self) -> u64 {
        self.local.load(Ordering::Relaxed)
    }
}

impl LocalBases for VersionBases<'_> {
    fn read<'b>(
        &'b self,
        id: &'b ChunkId,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Option<Vec<u8>>, OpError>> + Send + 'b>,
    > {
        Box::pin(async move {
            let Some(at) = self.sources.get(id) else {
                return Ok(None);
            };
            let got = read_local(at.clone(), *id, &self.naming).await?;
            if let Some(raw) = &got {
                self.local.fetch_add(raw.len() as u64, Ordering::Relaxed);
            }
            Ok(got)
        })
    }

    fn read_from_store(&self, bytes: u64) {
        self.from_store.fetch_add(bytes, Ordering::Relaxed);
    }
}
