//! Native delta writes: the two cloud operations `object_store` lacks, behind one small trait
//! that each cloud's backend implements ([`crate::store::s3`], [`crate::store::azure`]) and
//! [`crate::store::Store::delta`] hands out.
//!
//! * S3 (`aws-sdk-s3`): a multipart upload whose parts are `UploadPartCopy` of byte
//!   ranges of the current object (pinned by `x-amz-copy-source-if-match`) and `UploadPart` of
//!   new bytes, made visible at once by `CompleteMultipartUpload`.
//! * Azure Blob (REST): `Put Block` for new blocks only, then `Put Block List` re-commits
//!   the blocks the blob already holds (pinned by `If-Match`).
//!
//! Both writes are atomic: until the final call, readers see the previous object whole. The
//! mirror planner (`mirror::plan`) decides the parts; a [`DeltaStore`] only executes
//! them. Keys are relative to the destination URL's prefix.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Transience;

/// Object metadata holding the whole-file BLAKE3 (hex): `x-amz-meta-ferry-blake3` on S3,
/// `x-ms-meta-ferry_blake3` on Azure (metadata names there must be C# identifiers).
pub const S3_BLAKE3_METADATA: &str = "ferry-blake3";
/// The Azure spelling of [`S3_BLAKE3_METADATA`].
pub const AZURE_BLAKE3_METADATA: &str = "ferry_blake3";

/// A block id: BLAKE3 of the block's bytes. Azure receives it base64-encoded (all ids of a
/// blob must have the same length: 32 bytes here); S3 does not use it.
pub type BlockId = [u8; 32];

/// What a store can take in one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Smallest part but the last (S3: 5 MiB; Azure: none).
    pub min_part: u64,
    /// Largest part (S3: 5 GiB; Azure: 4000 MiB).
    pub max_part: u64,
    /// Most parts in one object (S3: 10,000; Azure: 50,000 blocks).
    pub max_parts: usize,
    /// Whether a kept part must be a block the object already holds, by id (Azure), rather
    /// than any byte range of it (S3).
    pub keep_by_block_id: bool,
}

impl Limits {
    /// S3 multipart upload limits.
    pub const S3: Limits = Limits {
        min_part: 5 << 20,
        max_part: 5 << 30,
        max_parts: 10_000,
        keep_by_block_id: false,
    };
    /// Azure block blob limits.
    pub const AZURE: Limits = Limits {
        min_part: 0,
        max_part: 4000 << 20,
        max_parts: 50_000,
        keep_by_block_id: true,
    };
}

/// The object currently at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// Entity tag, without surrounding quotes.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
    /// The whole-file BLAKE3 metadata, if the object has it.
    pub blake3: Option<String>,
    /// Azure: the committed block list in order (id, size); ids that are not 32 bytes long
    /// (blocks written by other tools) are reported as `None`. S3: empty.
    pub blocks: Vec<(Option<BlockId>, u64)>,
}

impl RemoteObject {
    /// The committed blocks ferry can name (32-byte ids), id → size.
    pub fn committed(&self) -> std::collections::HashMap<BlockId, u64> {
        self.blocks
            .iter()
            .filter_map(|(id, n)| Some(((*id)?, *n)))
            .collect()
    }
}

/// One part of the object being written, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Bytes the current object already holds: `old` is their range there (S3 copies it
    /// server-side), `block` their block id (Azure re-commits that committed block).
    Keep {
        /// BLAKE3 of the kept bytes.
        block: BlockId,
        /// Their byte range in the current object.
        old: Range<u64>,
    },
    /// Bytes to send: `new` is their range in the source file.
    Send {
        /// BLAKE3 of the bytes to send.
        block: BlockId,
        /// Their byte range in the source file.
        new: Range<u64>,
    },
}

impl Part {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Part::Keep { old: r, .. } | Part::Send { new: r, .. } => r.end.saturating_sub(r.start),
        }
    }

    /// Whether the part holds no bytes (a plan never contains one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A complete write: the new object is the concatenation of `parts`.
#[derive(Debug, Clone)]
pub struct WriteRequest<'a> {
    /// Key below the destination prefix.
    pub key: &'a str,
    /// The parts in order; their lengths add up to `size`.
    pub parts: &'a [Part],
    /// Total size (sum of part lengths).
    pub size: u64,
    /// The etag of the current object the `Keep` parts were planned against. When set, the
    /// write must fail with [`NativeError::Changed`] rather than use bytes of any other
    /// version. `None` when there are no `Keep` parts.
    pub base_etag: Option<&'a str>,
    /// Whole-file BLAKE3 (hex), stored as object metadata.
    pub blake3: &'a str,
}

impl WriteRequest<'_> {
    /// Checks the request against a store's limits before any call: part counts and sizes,
    /// keeps pinned to a base etag, sizes adding up, a hex BLAKE3. The message is one line
    /// naming the offending part (1-based).
    pub fn check(&self, limits: &Limits) -> Result<(), PlanError> {
        let count = self.parts.len();
        if count > limits.max_parts {
            return Err(PlanError::TooManyParts {
                count,
                max: limits.max_parts,
            });
        }
        let mut total: u64 = 0;
        for (i, part) in self.parts.iter().enumerate() {
            let (Part::Keep { old: range, .. } | Part::Send { new: range, .. }) = part;
            let n = i + 1;
            if range.start >= range.end {
                return Err(PlanError::EmptyRange {
                    n,
                    count,
                    start: range.start,
                    end: range.end,
                });
            }
            let len = range.end - range.start;
            if len > limits.max_part {
                let max = limits.max_part;
                return Err(PlanError::PartTooBig { n, count, len, max });
            }
            if n < count && len < limits.min_part {
                let min = limits.min_part;
                return Err(PlanError::PartTooSmall { n, count, len, min });
            }
            if matches!(part, Part::Keep { .. }) && self.base_etag.is_none() {
                return Err(PlanError::KeepWithoutBase { n, count });
            }
            total = total.saturating_add(len);
        }
        if total != self.size {
            return Err(PlanError::SizeMismatch {
                total,
                size: self.size,
            });
        }
        if self.blake3.is_empty() || !self.blake3.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PlanError::BadBlake3);
        }
        if self
            .base_etag
            .is_some_and(|e| e.is_empty() || e.contains(['"', '\r', '\n']))
        {
            return Err(PlanError::BadEtag);
        }
        Ok(())
    }
}

/// A write plan a store cannot take, found before any request. Parts are numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The plan has more parts than an object can hold.
    #[error("{count} parts, but one object holds at most {max}")]
    TooManyParts {
        /// Parts in the plan.
        count: usize,
        /// The store's limit.
        max: usize,
    },
    /// A part with no bytes or a reversed range.
    #[error("part {n} of {count} has an empty or reversed range {start}..{end}")]
    EmptyRange {
        /// The part's number, from 1.
        n: usize,
        /// Parts in the plan.
        count: usize,
        /// Start of its range.
        start: u64,
        /// End of its range.
        end: u64,
    },
    /// A part larger than the store accepts.
    #[error("part {n} of {count} is {len} bytes, more than the {max} bytes a part can hold")]
    PartTooBig {
        /// The part's number, from 1.
        n: usize,
        /// Parts in the plan.
        count: usize,
        /// Its length in bytes.
        len: u64,
        /// The store's largest part.
        max: u64,
    },
    /// A part other than the last one, smaller than the store accepts.
    #[error(
        "part {n} of {count} is {len} bytes; every part but the last needs at least {min} bytes"
    )]
    PartTooSmall {
        /// The part's number, from 1.
        n: usize,
        /// Parts in the plan.
        count: usize,
        /// Its length in bytes.
        len: u64,
        /// The store's smallest part.
        min: u64,
    },
    /// A kept part in a plan without a base etag.
    #[error("part {n} of {count} keeps bytes of the current object, but the plan has no base etag to pin them")]
    KeepWithoutBase {
        /// The part's number, from 1.
        n: usize,
        /// Parts in the plan.
        count: usize,
    },
    /// The parts do not add up to the declared size.
    #[error("the parts add up to {total} bytes, but the object is {size} bytes")]
    SizeMismatch {
        /// Sum of the part lengths.
        total: u64,
        /// The declared object size.
        size: u64,
    },
    /// The whole-file BLAKE3 is empty or not hex.
    #[error("the BLAKE3 metadata must be a non-empty hex string")]
    BadBlake3,
    /// The base etag would not survive being sent as a header.
    #[error("the base etag must be non-empty, without quotes or line breaks")]
    BadEtag,
    /// The key is empty.
    #[error("the blob name is empty")]
    EmptyKey,
}

/// Reads byte ranges of the source file being mirrored.
#[async_trait]
pub trait PartSource: Send + Sync {
    /// Reads `range` of the source file; fewer bytes than asked is an error.
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes>;
}

/// Told about a write as it goes.
pub trait WriteObserver: Send + Sync {
    /// A multipart upload (S3) was started: recorded so an interrupted run's upload can be
    /// aborted later with [`DeltaStore::abort`].
    fn started(&self, _key: &str, _upload_id: &str) {}
    /// `n` more payload bytes were sent (part bodies only; not headers, not copies).
    fn sent(&self, _n: u64) {}
    /// Called right before the call that makes the new object visible (and before a
    /// single-request upload): an error aborts the write, leaving the previous object. The
    /// mirror checks here that the source did not change while its parts were read.
    fn before_commit(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asks `observer` whether the write may be committed; a refusal names the object `url`.
pub(crate) fn check_before_commit(
    observer: &dyn WriteObserver,
    url: &str,
) -> Result<(), NativeError> {
    observer
        .before_commit()
        .map_err(|source| NativeError::Source {
            url: url.to_string(),
            source,
        })
}

/// Errors of native calls. Messages name the object and the fix.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The object is no longer the version the write was planned against (etag mismatch on
    /// a copy source or a conditional commit). The caller retries as a full upload.
    #[error("{url} changed while it was being written (etag no longer {expected})")]
    Changed {
        /// The object's URL.
        url: String,
        /// The etag the write was planned against.
        expected: String,
    },
    /// A request failed or was refused. `status` is the HTTP status of the answer, if there
    /// was one; `transience` was decided where the failure was seen (the status, or the
    /// transport error: a connection refused or a timeout passes, a refused plan does not).
    #[error("{url}: {message}")]
    Request {
        /// The object's URL.
        url: String,
        /// What failed, in one line (the answer's error code and message when there was one).
        message: String,
        /// The HTTP status of the answer, if one came back.
        status: Option<u16>,
        /// Whether trying again may help, decided from the status or the transport error.
        transience: Transience,
    },
    /// A part of the source file could not be read (or changed) during the write.
    #[error("{url}: reading the source: {source}")]
    Source {
        /// The destination object's URL.
        url: String,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The native client could not be set up from the environment (what to set is in the text).
    #[error("{0}")]
    Config(String),
}

impl NativeError {
    /// Whether trying again may help: a changed object or a changed source is a race, a
    /// request says so itself, a configuration problem stays.
    pub fn transience(&self) -> Transience {
        match self {
            NativeError::Changed { .. } | NativeError::Source { .. } => Transience::Transient,
            NativeError::Request { transience, .. } => *transience,
            NativeError::Config(_) => Transience::Permanent,
        }
    }

    /// The HTTP status of the answer that failed the request, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            NativeError::Request { status, .. } => *status,
            _ => None,
        }
    }

    /// A plan refused before any request: permanent, no status.
    pub(crate) fn refused(url: String, problem: &PlanError) -> Self {
        NativeError::Request {
            url,
            message: format!("refusing the write plan: {problem}"),
            status: None,
            transience: Transience::Permanent,
        }
    }
}

/// A store that can write objects from kept and sent parts.
#[async_trait]
pub trait DeltaStore: Send + Sync {
    /// What one write can hold on this store.
    fn limits(&self) -> Limits;

    /// The object at `key`, or `None` if there is none.
    async fn probe(&self, key: &str) -> Result<Option<RemoteObject>, NativeError>;

    /// Replaces (or creates) the object at `key`, atomically; returns the new etag (without
    /// quotes). On failure the previous object is untouched.
    async fn write(
        &self,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError>;

    /// Unfinished writes of `key` (S3: multipart uploads, with when each was started),
    /// including any an interrupted run had no time to record. Others: none.
    async fn unfinished_uploads(
        &self,
        _key: &str,
    ) -> Result<Vec<(String, std::time::SystemTime)>, NativeError> {
        Ok(Vec::new())
    }

    /// Cleans up after a write that never finished (S3: aborts the multipart upload
    /// `upload_id`; Azure: nothing, uncommitted blocks expire). Not finding it is success.
    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), NativeError>;
}

/// Strips the quotes some APIs put around entity tags.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}
