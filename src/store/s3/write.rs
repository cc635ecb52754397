//! The S3 calls of a delta write: `HeadObject`, `PutObject`, the parts of a multipart upload
//! (`UploadPart`, `UploadPartCopy`), its completion and abort; and their errors, with the HTTP
//! status and transience read from the SDK's error.

use std::ops::Range;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::S3Delta;
use crate::error::{error_chain, Transience};
use crate::store::delta::{
    check_before_commit, normalize_etag, NativeError, Part, PartSource, RemoteObject,
    WriteObserver, WriteRequest, S3_BLAKE3_METADATA,
};

/// Parts uploaded or copied at once: bounds memory to this many parts' bytes.
const PARTS_IN_FLIGHT: usize = 4;

impl S3Delta {
    /// HeadObject of a full key; `None` when there is no object.
    pub(super) async fn head(&self, key: &str) -> Result<Option<RemoteObject>, NativeError> {
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(request_error("HeadObject", &self.url(key), &e)),
        };
        Ok(Some(RemoteObject {
            etag: normalize_etag(out.e_tag().unwrap_or_default()),
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            blake3: out
                .metadata()
                .and_then(|m| m.get(S3_BLAKE3_METADATA))
                .cloned(),
            blocks: Vec::new(),
        }))
    }

    pub(super) async fn put(
        &self,
        key: &str,
        req: &WriteRequest<'_>,
        body: Bytes,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        let n = body.len() as u64;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .metadata(S3_BLAKE3_METADATA, req.blake3)
            .set_server_side_encryption(self.sse.kind.clone())
            .set_ssekms_key_id(self.sse.kms_key_id.clone())
            .set_bucket_key_enabled(self.sse.bucket_key_enabled)
            .body(ByteStream::from(body));
        let sent = if self.unsigned_payload {
            put.customize().disable_payload_signing().send().await
        } else {
            put.send().await
        };
        let out = sent.map_err(|e| request_error("PutObject", &self.url(key), &e))?;
        observer.sent(n);
        Ok(normalize_etag(out.e_tag().unwrap_or_default()))
    }

    /// Uploads and copies every part, then completes; the caller aborts on error.
    pub(super) async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        // By index: a closure taking `&Part` trips async_trait's higher-ranked lifetimes.
        let parts: Vec<CompletedPart> = futures::stream::iter(0..req.parts.len())
            .map(|i| {
                let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
                self.upload_part(key, upload_id, number, &req.parts[i], req, source, observer)
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        check_before_commit(observer, &self.url(key))?;
        if let Some(base) = req.base_etag {
            // Again right before the complete: servers that ignore the copy and complete
            // conditions (moto) would otherwise mix two versions of a changed object.
            let current = self.head(key).await?;
            if current.as_ref().map(|o| o.etag.as_str()) != Some(base) {
                return Err(NativeError::Changed {
                    url: self.url(key),
                    expected: base.to_string(),
                });
            }
        }
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if let Some(base) = req.base_etag {
            // Where the server supports it, a write that lost a race fails rather than
            // replacing the newer object.
            complete = complete.if_match(quoted(base));
        }
        let out = complete
            .send()
            .await
            .map_err(|e| self.changed_or("CompleteMultipartUpload", key, req, &e))?;
        Ok(normalize_etag(out.e_tag().unwrap_or_default()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        part: &Part,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<CompletedPart, NativeError> {
        let etag = match part {
            Part::Keep { old, .. } => {
                // Validation guarantees a base etag for every Keep part.
                let base = req.base_etag.unwrap_or_default();
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(copy_source(&self.bucket, key))
                    .copy_source_range(format!("bytes={}-{}", old.start, old.end - 1))
                    .copy_source_if_match(quoted(base))
                    .send()
                    .await
                    .map_err(|e| self.changed_or("UploadPartCopy", key, req, &e))?;
                out.copy_part_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default()
                    .to_string()
            }
            Part::Send { new, .. } => {
                let body = self.read(source, key, new.clone()).await?;
                let n = body.len() as u64;
                let upload = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body));
                let sent = if self.unsigned_payload {
                    upload.customize().disable_payload_signing().send().await
                } else {
                    upload.send().await
                };
                let out = sent.map_err(|e| request_error("UploadPart", &self.url(key), &e))?;
                observer.sent(n);
                out.e_tag().unwrap_or_default().to_string()
            }
        };
        tracing::debug!(key, part = number, kind = part_kind(part), "part stored");
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build())
    }

    /// Reads a range of the source, insisting on all of it.
    pub(super) async fn read(
        &self,
        source: &dyn PartSource,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, NativeError> {
        let want = range.end - range.start;
        let source_error = |source| NativeError::Source {
            url: self.url(key),
            source,
        };
        let bytes = source.read(range.clone()).await.map_err(source_error)?;
        if bytes.len() as u64 != want {
            return Err(source_error(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {}..{}: got {} bytes, expected {want}",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            )));
        }
        Ok(bytes)
    }

    /// `Changed` when the object is no longer the planned version (412 on a pinned copy or
    /// a conditional complete, or the copy source is gone); else a request error.
    fn changed_or<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        op: &str,
        key: &str,
        req: &WriteRequest<'_>,
        err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> NativeError {
        if let Some(expected) = req.base_etag {
            let status = status(err);
            let gone = err.code() == Some("NoSuchKey")
                || (op == "UploadPartCopy"
                    && status == Some(404)
                    && err.code() != Some("NoSuchUpload"));
            if status == Some(412) || gone {
                tracing::info!(key, op, ?status, "object changed since planning");
                return NativeError::Changed {
                    url: self.url(key),
                    expected: expected.to_string(),
                };
            }
        }
        request_error(op, &self.url(key), err)
    }

    pub(super) async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), NativeError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") || status(&e) == Some(404) => Ok(()),
            Err(e) => Err(request_error("AbortMultipartUpload", &self.url(key), &e)),
        }
    }
}

/// `x-amz-copy-source`: the bucket and the URL-encoded key.
pub(super) fn copy_source(bucket: &str, key: &str) -> String {
    const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, KEY)
    )
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn part_kind(part: &Part) -> &'static str {
    match part {
        Part::Keep { .. } => "copy",
        Part::Send { .. } => "upload",
    }
}

fn status<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A one-line error naming the operation, the HTTP status and the service's code and
/// message, and for credential problems the fix. Credentials never appear in SDK errors.
pub(super) fn request_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    url: &str,
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> NativeError {
    let mut message = match (status(err), err.code()) {
        (Some(status), code) => {
            let mut m = format!("{op} failed: HTTP {status}");
            if let Some(code) = code {
                m.push_str(&format!(" {code}"));
            }
            if let Some(text) = err.message() {
                m.push_str(&format!(": {text}"));
            }
            m
        }
        (None, _) => format!("{op} failed: {}", error_chain(err)),
    };
    message = message.replace(['\n', '\r'], " ");
    let credentials = status(err) == Some(403)
        || matches!(
            err.code(),
            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken")
        )
        || message.contains("credentials");
    if credentials {
        message.push_str(
            " (check the credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, plus AWS_SESSION_TOKEN for temporary keys, or give the role s3:PutObject and s3:GetObject on the bucket)",
        );
    } else if matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
    ) {
        message.push_str(" (is the endpoint reachable? AWS_ENDPOINT sets it for a non-AWS server)");
    }
    NativeError::Request {
        url: url.to_string(),
        message,
        status: status(err),
        transience: sdk_transience(err),
    }
}

/// Whether an SDK failure may pass: an answer by its status, no answer (the network, a
/// timeout) always; a request that could not even be built never.
fn sdk_transience<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Transience {
    match (status(err), err) {
        (Some(status), _) => Transience::of_status(status),
        (None, SdkError::ConstructionFailure(_)) => Transience::Permanent,
        (None, _) => Transience::Transient,
    }
}
