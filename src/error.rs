//! What every error in ferry answers: whether trying again may help.

use serde::{Deserialize, Serialize};

/// Whether trying again may help. Decided where the failure is seen (a store's response, an
/// operation's race), never by reading an error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transience {
    /// The network, a busy server, a race: retried with backoff.
    Transient,
    /// Configuration, credentials, a missing bucket, corrupt data: reported at once; the next
    /// trigger tries again.
    Permanent,
}
