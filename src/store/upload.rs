//! `Upload`: a streamed write of one object through a [`Store`].

use bytes::Bytes;
use object_store::path::Path;
use object_store::WriteMultipart;

use super::{Store, StoreError};

/// A streamed write of one object: [`Store::upload`]. Dropped without [`Upload::finish`], the
/// object is not written (call [`Upload::abort`] to free the parts at once).
pub struct Upload {
    pub(super) store: Store,
    pub(super) path: Path,
    pub(super) inner: WriteMultipart,
}

impl Upload {
    /// Appends bytes (buffered into parts).
    pub fn write(&mut self, data: &[u8]) {
        self.inner.write(data)
    }

    /// Appends a piece without copying it.
    pub fn put(&mut self, data: Bytes) {
        self.inner.put(data)
    }

    /// Waits until at most `max` parts are in flight.
    pub async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        let Upload { store, path, inner } = self;
        inner
            .wait_for_capacity(max)
            .await
            .map_err(|e| store.op_error("writing", path, e))
    }

    /// Sends what is left and commits the object; returns its etag, if the store gave one.
    pub async fn finish(self) -> Result<Option<String>, StoreError> {
        let Upload { store, path, inner } = self;
        match inner.finish().await {
            Ok(put) => Ok(put.e_tag),
            Err(e) => Err(store.op_error("writing", &path, e)),
        }
    }

    /// Gives the upload up; the object is not written.
    pub async fn abort(self) -> Result<(), StoreError> {
        let Upload { store, path, inner } = self;
        inner
            .abort()
            .await
            .map_err(|e| store.op_error("aborting the upload of", &path, e))
    }
}
