//! What goes over the wire to Azure and what is checked before it: block ids, the Put Block
//! List body, Get Block List answers, error bodies, and plan validation. No I/O.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::header::HeaderName;

use crate::error::first_line;
use crate::store::delta::{BlockId, Limits, NativeError, Part, PlanError, WriteRequest};

/// Refuses a plan Azure cannot take, before any request.
pub(super) fn validate(
    req: &WriteRequest<'_>,
    limits: &Limits,
    url: &str,
) -> Result<(), NativeError> {
    let fail = |problem: PlanError| NativeError::Request {
        url: url.to_string(),
        message: problem.to_string(),
        status: None,
        transience: crate::error::Transience::Permanent,
    };
    if req.key.trim_matches('/').is_empty() {
        return Err(fail(PlanError::EmptyKey));
    }
    req.check(limits).map_err(fail)?;
    Ok(())
}

/// A block id as Azure receives it: base64 of the 32 bytes (44 characters, all alike).
pub fn encode_block_id(id: &BlockId) -> String {
    BASE64.encode(id)
}

/// The id of a block as ferry wrote it, or `None` for ids of other writers.
pub fn decode_block_id(name: &str) -> Option<BlockId> {
    BASE64.decode(name).ok()?.try_into().ok()
}

/// The Put Block List body: kept blocks from the committed list, sent ones from the latest
/// staged version (the same bytes, since ids are content hashes).
pub(super) fn block_list_xml(parts: &[Part]) -> String {
    let mut xml = String::with_capacity(64 + parts.len() * 70);
    xml.push_str(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
    for part in parts {
        let (tag, block) = match part {
            Part::Keep { block, .. } => ("Committed", block),
            Part::Send { block, .. } => ("Latest", block),
        };
        xml.push_str(&format!("<{tag}>{}</{tag}>", encode_block_id(block)));
    }
    xml.push_str("</BlockList>");
    xml
}

/// A Get Block List answer: (base64 id, size) in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct BlockList {
    pub(super) committed: Vec<(String, u64)>,
    pub(super) uncommitted: Vec<(String, u64)>,
    /// The response's ETag: Azure sends it when the blob has committed blocks (Azurite also
    /// for a blob that has only staged ones, which HEAD reports as missing).
    pub(super) etag: Option<String>,
    /// Whether the blob exists (committed or with staged blocks only).
    pub(super) exists: bool,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlockListXml {
    #[serde(default)]
    committed_blocks: BlocksXml,
    #[serde(default)]
    uncommitted_blocks: BlocksXml,
}

#[derive(serde::Deserialize, Default)]
struct BlocksXml {
    #[serde(rename = "Block", default)]
    blocks: Vec<BlockXml>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlockXml {
    name: String,
    size: u64,
}

/// A Get Block List answer that is not one.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the block list: {reason}")]
pub(super) struct BlockListError {
    reason: String,
}

pub(super) fn parse_block_list(xml: &str) -> Result<BlockList, BlockListError> {
    let parsed: BlockListXml = quick_xml::de::from_str(xml).map_err(|e| BlockListError {
        reason: first_line(&e.to_string()).to_string(),
    })?;
    let pairs = |b: BlocksXml| b.blocks.into_iter().map(|b| (b.name, b.size)).collect();
    Ok(BlockList {
        committed: pairs(parsed.committed_blocks),
        uncommitted: pairs(parsed.uncommitted_blocks),
        etag: None,
        exists: false,
    })
}

/// The text of the first `<name>` element of an error body (no full parse: bodies of
/// failed requests may be anything).
pub(super) fn xml_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + body[start..].find(&format!("</{name}>"))?;
    Some(body[start..end].trim().to_string())
}

/// `x-ms-meta-` + [`crate::store::delta::AZURE_BLAKE3_METADATA`] (a test checks they agree).
pub(super) const META_HEADER: &str = "x-ms-meta-ferry_blake3";

pub(super) fn meta_header() -> HeaderName {
    HeaderName::from_static(META_HEADER)
}
