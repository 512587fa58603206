//! The node's edge, what every client connection passes before it is a session: the
//! connection slots under `server.max_connections`, the limits per client address, and the
//! listener's TLS.

use std::sync::Arc;

use crate::addresses::Addresses;
use crate::admission::Admission;
use crate::tls::Tls;

/// Admission, address limits and TLS of the client listener.
pub(crate) struct Edge {
    /// Slots for open (or upgrading) connections under `server.max_connections`.
    pub(crate) admission: Admission,
    /// Limits per client address, and the handshakes in progress.
    pub(crate) addresses: Addresses,
    /// The listener's TLS (`server.tls`), if any.
    pub(crate) tls: Option<Arc<Tls>>,
}
