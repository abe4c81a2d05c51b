//! The one error type of the core. The Python bindings map it to `ValueError` in one place.

use std::fmt;

/// Everything that can go wrong in the core: always a caller's input problem, never a bug
/// that should be hidden. The message says what is wrong and, where possible, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreError(pub String);

impl CoreError {
    pub fn new(msg: impl Into<String>) -> Self {
        CoreError(msg.into())
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CoreError {}

/// Shorthand for results of the core.
pub type CoreResult<T> = Result<T, CoreError>;

/// An empty vector with room for exactly `len` items, or an error naming `what` when the
/// memory is not available: a size that passed its documented bound may still not fit in this
/// machine, and that must be an error, not an abort of the process.
pub(crate) fn try_with_capacity<T>(len: usize, what: &str) -> CoreResult<Vec<T>> {
    let mut items = Vec::new();
    items.try_reserve_exact(len).map_err(|_| {
        CoreError::new(format!(
            "not enough memory for {what}: {len} items of {} bytes",
            std::mem::size_of::<T>()
        ))
    })?;
    Ok(items)
}
