//! `[privacy]` of the collector's file: where the regional policies come from (the
//! policies themselves are their own file, [`super::config`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the regional privacy policies come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// Policy file (see `config/privacy.toml`). With the default path and no such file,
    /// the collector runs without a privacy policy and says so at start-up; any other
    /// path must exist. `none` disables privacy policies explicitly.
    pub file: PathBuf,
    /// The pseudonym key, in place of the policy file's `[hmac].current`: `{ id = "…",
    /// file = "…" }` or `{ id = "…", env = "…" }`. Every replica must use the same key
    /// (e.g. one Kubernetes Secret), else their pseudonyms differ.
    pub hmac_key: Option<crate::privacy::config::KeyConfig>,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        PrivacySettings {
            file: PathBuf::from("config/privacy.toml"),
            hmac_key: None,
        }
    }
}
