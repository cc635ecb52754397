//! Whole-file BLAKE3 on a thread of its own, beside the chunker's per-chunk hashing.

use crate::ids::FileHash;

/// Computes whole-file BLAKE3 on its own thread, so the producer hashes each byte only once.
pub(crate) struct FileHasher {
    tx: std::sync::mpsc::SyncSender<Option<std::sync::Arc<[u8]>>>,
    rx: std::sync::mpsc::Receiver<FileHash>,
}

impl FileHasher {
    pub(crate) fn spawn() -> Self {
        let (tx, data_rx) = std::sync::mpsc::sync_channel::<Option<std::sync::Arc<[u8]>>>(16);
        let (hash_tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut h = blake3::Hasher::new();
            for msg in data_rx {
                match msg {
                    Some(data) => {
                        h.update(&data);
                    }
                    None => {
                        if hash_tx.send(FileHash::from(h.finalize())).is_err() {
                            return;
                        }
                        h.reset();
                    }
                }
            }
        });
        Self { tx, rx }
    }

    pub(crate) fn update(&self, data: std::sync::Arc<[u8]>) -> std::io::Result<()> {
        self.tx
            .send(Some(data))
            .map_err(|_| std::io::Error::other("file hasher stopped"))
    }

    /// The hash of everything sent since the last `finish`.
    pub(crate) fn finish(&self) -> std::io::Result<FileHash> {
        self.tx
            .send(None)
            .map_err(|_| std::io::Error::other("file hasher stopped"))?;
        self.rx
            .recv()
            .map_err(|_| std::io::Error::other("file hasher stopped"))
    }
}
