//! How a backend fails, whichever backend it is: it could not be reached or failed
//! (`Unavailable`, with the backend's own error as the source), did not answer in time
//! (`Timeout`), or answered what this version does not understand (`Malformed`). Each
//! trait's error wraps it; the backend converts its client library's errors into it.

use std::error::Error;
use std::time::Duration;

/// A backend that did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("{backend}: {source}")]
    Unavailable { backend: &'static str, source: Box<dyn Error + Send + Sync> },
    #[error("no answer from {backend} within {after:?}")]
    Timeout { backend: &'static str, after: Duration },
    #[error("{backend} answered what this version does not understand ({detail})")]
    Malformed { backend: &'static str, detail: String },
}
