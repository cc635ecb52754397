//! `Settings`: what the process environment decides for every operation (store retries,
//! timeouts and fault injection; the mirror's stale-upload age), resolved once where the
//! process starts — `main.rs` for a command, `Daemon::open` for the daemon — and handed to
//! [`super::App`], which passes it down. Nothing below reads these variables itself.

use crate::mirror::MirrorSettings;
use crate::store::{StoreError, StoreOptions};

/// The environment's choices for every store and operation of one process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// Retries, timeouts, `FERRY_FAULTS` and `FERRY_SLOW_SECS`: every store the process opens.
    pub store: StoreOptions,
    /// `FERRY_MIRROR_STALE_UPLOADS`: when `ferry mirror` aborts another run's upload.
    pub mirror: MirrorSettings,
}

impl Settings {
    /// Reads every variable once from the process environment; an invalid one is an error
    /// that names it.
    pub fn from_env() -> Result<Self, StoreError> {
        Ok(Self {
            store: StoreOptions::from_env()?,
            mirror: MirrorSettings::from_env(),
        })
    }
}
