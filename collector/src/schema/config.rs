//! `[schemas]`: where the versioned JSON Schemas live.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the versioned JSON Schemas live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemasConfig {
    /// Folder holding `<event_name>/v<N>.json`; relative paths are from the working
    /// directory.
    pub dir: PathBuf,
}

impl Default for SchemasConfig {
    fn default() -> Self {
        SchemasConfig {
            dir: PathBuf::from("config/schemas"),
        }
    }
}
