//! How a process is wired: the seed's `is_pytest` flag and the backend choice, as one enum.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which queue backend and lane store a tenant runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In-test wiring: the inline backend from the caller's factory (`inline-test`), memory
    /// lanes, ephemeral stores.
    Test,
    /// The embedded default: in-process workers, memory lanes, the SQLite job store.
    Inline,
    /// Redis (single node or Cluster): shared by many processes.
    Redis,
}

impl Mode {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Inline => "inline",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
