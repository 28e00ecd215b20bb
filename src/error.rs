//! wick's error type: every user-facing failure is one line naming what and where.

use std::path::Path;

/// One clear, user-facing failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    // The OS error is part of this one line, not a `source`, so `{:#}` chains never repeat it.
    #[error("{path}: {}", os_message(.error))]
    Io { path: String, error: std::io::Error },
    /// A config file or key is wrong.
    #[error("{0}")]
    Config(String),
    /// A data file has bad content (the message names file and line).
    #[error("{0}")]
    Data(String),
    /// A model file, tokenizer or architecture is unusable.
    #[error("{0}")]
    Model(String),
    /// A numeric backend error, with context.
    #[error("{context}: {source}")]
    Candle { context: String, source: candle_core::Error },
}

/// wick's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.display().to_string(), error: source }
    }
}

/// "No such file or directory" rather than "No such file or directory (os error 2)".
fn os_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(pos) if text.ends_with(')') => text[..pos].to_string(),
        _ => text,
    }
}

/// Attach context to candle errors.
pub trait CandleContext<T> {
    /// Wrap a candle error with a message saying what was being done.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Candle { context: what(), source })
    }
}
