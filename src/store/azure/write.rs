//! The calls of an Azure delta write: Get Block List and Get Blob Properties (the probe),
//! Put Block for the blocks not yet staged, Put Blob for a small new blob, and the pinned
//! Put Block List that commits.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use reqwest::{Method, StatusCode};

use super::http::{changed, check, header, Op, Retry};
use super::wire::{block_list_xml, encode_block_id, meta_header, parse_block_list, BlockList};
use super::AzureDelta;
use crate::store::delta::{
    check_before_commit, normalize_etag, NativeError, Part, PartSource, WriteObserver, WriteRequest,
};

/// Blocks staged at once: bounds memory to this many blocks' bytes.
const STAGE_CONCURRENCY: usize = 4;

impl AzureDelta {
    /// Get Block List; a missing blob has no blocks.
    pub(super) async fn block_list(
        &self,
        key: &str,
        list_type: &str,
    ) -> Result<BlockList, NativeError> {
        let op = Op::new("Get Block List", self.display(key));
        let url = self.blob_url(key, &[("comp", "blocklist"), ("blocklisttype", list_type)]);
        let resp = self
            .send(
                op.clone(),
                Method::GET,
                url,
                HeaderMap::new(),
                Bytes::new(),
                Retry::Idempotent,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(BlockList::default());
        }
        let resp = check(resp, &op).await?;
        let etag = header(&resp, ETAG).map(|e| normalize_etag(&e));
        let body = resp.text().await.map_err(|e| op.transport(e))?;
        let mut list = parse_block_list(&body).map_err(|e| op.fail(e.to_string()))?;
        list.etag = etag;
        list.exists = true;
        Ok(list)
    }

    /// Get Blob Properties: `(etag, size, blake3)`, or `None` if there is no blob.
    pub(super) async fn properties(
        &self,
        key: &str,
    ) -> Result<Option<(String, u64, Option<String>)>, NativeError> {
        let op = Op::new("Get Blob Properties", self.display(key));
        let url = self.blob_url(key, &[]);
        let resp = self
            .send(
                op.clone(),
                Method::HEAD,
                url,
                HeaderMap::new(),
                Bytes::new(),
                Retry::Idempotent,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, &op).await?;
        let etag = header(&resp, ETAG)
            .map(|e| normalize_etag(&e))
            .ok_or_else(|| op.fail("the response has no ETag".into()))?;
        let size = header(&resp, CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| op.fail("the response has no Content-Length".into()))?;
        let blake3 = header(&resp, meta_header());
        Ok(Some((etag, size, blake3)))
    }

    /// Stages the `Send` parts the blob does not already hold uncommitted, at most
    /// [`STAGE_CONCURRENCY`] at a time. After a failure no new block starts, but those in
    /// flight finish (and are counted), so a rerun resends as little as possible.
    pub(super) async fn stage(
        &self,
        req: &WriteRequest<'_>,
        staged: &HashMap<String, u64>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<(), NativeError> {
        let mut seen = HashSet::new();
        let todo: Vec<(String, std::ops::Range<u64>)> = req
            .parts
            .iter()
            .filter_map(|part| match part {
                Part::Send { block, new } => Some((encode_block_id(block), new.clone())),
                Part::Keep { .. } => None,
            })
            .filter(|(id, new)| staged.get(id) != Some(&(new.end - new.start)))
            .filter(|(id, _)| seen.insert(id.clone()))
            .collect();
        tracing::debug!(blob = %self.display(req.key), blocks = todo.len(), "staging blocks");
        let failed = AtomicBool::new(false);
        let first_error = Mutex::new(None);
        futures::stream::iter(todo)
            .map(|(id, range)| {
                let (failed, first_error) = (&failed, &first_error);
                async move {
                    if failed.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(e) = self.put_block(req.key, &id, range, source, observer).await {
                        failed.store(true, Ordering::Release);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                    }
                }
            })
            .buffer_unordered(STAGE_CONCURRENCY)
            .for_each(|()| async {})
            .await;
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn put_block(
        &self,
        key: &str,
        id: &str,
        range: std::ops::Range<u64>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<(), NativeError> {
        let len = range.end - range.start;
        let data = self.read_part(key, range, source).await?;
        let op = Op::new("Put Block", self.display(key));
        let url = self.blob_url(key, &[("comp", "block"), ("blockid", id)]);
        let resp = self
            .send(
                op.clone(),
                Method::PUT,
                url,
                HeaderMap::new(),
                data,
                Retry::Idempotent,
            )
            .await?;
        check(resp, &op).await?;
        observer.sent(len);
        Ok(())
    }

    /// Bytes `range` of the source, all of them.
    async fn read_part(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        source: &dyn PartSource,
    ) -> Result<Bytes, NativeError> {
        let data = source
            .read(range.clone())
            .await
            .map_err(|source| NativeError::Source {
                url: self.display(key),
                source,
            })?;
        if data.len() as u64 != range.end - range.start {
            return Err(NativeError::Source {
                url: self.display(key),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "bytes {}..{}: read {} bytes, expected {}",
                        range.start,
                        range.end,
                        data.len(),
                        range.end - range.start
                    ),
                ),
            });
        }
        Ok(data)
    }

    /// Put Blob: the whole blob in one request, with its BLAKE3 metadata.
    pub(super) async fn put_blob(
        &self,
        req: &WriteRequest<'_>,
        range: std::ops::Range<u64>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        let url_text = self.display(req.key);
        let len = range.end - range.start;
        let data = self.read_part(req.key, range, source).await?;
        check_before_commit(observer, &url_text)?;
        let op = Op::new("Put Blob", url_text);
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let blake3 = HeaderValue::from_str(req.blake3)
            .map_err(|_| op.fail("the BLAKE3 metadata is not a valid header value".into()))?;
        headers.insert(meta_header(), blake3);
        let url = self.blob_url(req.key, &[]);
        let resp = self
            .send(
                op.clone(),
                Method::PUT,
                url,
                headers,
                data,
                Retry::Idempotent,
            )
            .await?;
        let resp = check(resp, &op).await?;
        observer.sent(len);
        header(&resp, ETAG)
            .map(|e| normalize_etag(&e))
            .ok_or_else(|| op.fail("the response has no ETag".into()))
    }

    /// Put Block List: commits `parts` in order, conditional on `base_etag`.
    pub(super) async fn commit(&self, req: &WriteRequest<'_>) -> Result<String, NativeError> {
        let url_text = self.display(req.key);
        let op = Op::new("Put Block List", url_text.clone());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        let blake3 = HeaderValue::from_str(req.blake3)
            .map_err(|_| op.fail("the BLAKE3 metadata is not a valid header value".into()))?;
        headers.insert(meta_header(), blake3);
        if let Some(etag) = req.base_etag {
            let value = HeaderValue::from_str(&format!("\"{}\"", normalize_etag(etag)))
                .map_err(|_| op.fail("the base etag is not a valid header value".into()))?;
            headers.insert(reqwest::header::IF_MATCH, value);
        }
        let url = self.blob_url(req.key, &[("comp", "blocklist")]);
        let body = Bytes::from(block_list_xml(req.parts));
        let resp = self
            .send(op.clone(), Method::PUT, url, headers, body, Retry::Unsent)
            .await?;
        if resp.status() == StatusCode::PRECONDITION_FAILED {
            return Err(changed(url_text, req.base_etag.unwrap_or_default()));
        }
        let resp = check(resp, &op).await?;
        header(&resp, ETAG)
            .map(|e| normalize_etag(&e))
            .ok_or_else(|| op.fail("the response has no ETag".into()))
    }
}
