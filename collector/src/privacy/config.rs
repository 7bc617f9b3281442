//! The privacy policy file (`config/privacy.toml`): regions, their policies, and the
//! keys used to pseudonymize. The `///` docs here are the reference in
//! `docs/privacy.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::path::FieldPath;

/// The whole privacy configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Region used when no trusted header and no `context.country` names one.
    pub default_region: String,
    /// Header set by a trusted edge (CDN, load balancer) with the client's country
    /// code, e.g. `cf-ipcountry`. Honoured only from `trusted_proxies`.
    #[serde(default)]
    pub region_header: Option<String>,
    /// Peers (CIDR or address) whose `region_header` is believed. Anyone else could
    /// spoof it.
    #[serde(default, with = "crate::config::nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Keys for keyed HMAC-SHA256 pseudonyms.
    #[serde(default)]
    pub hmac: HmacConfig,
    /// Regions by the countries they cover.
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
    /// Policies by name.
    pub policies: BTreeMap<String, PolicyConfig>,
}

/// Pseudonymization keys. Never the key material itself: a file or a variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// Id of the key that pseudonyms are made with (stamped on records as
    /// `privacy_key`). Empty: a key is generated into the data dir on first start.
    #[serde(default)]
    pub current: Option<String>,
    /// Keys that are also applied during a rotation window, so that joins on the old
    /// pseudonyms keep working (written to `pseudonyms_previous`).
    #[serde(default)]
    pub previous: Vec<String>,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// Where one key's material comes from (hex or raw bytes, at least 32 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: String,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub env: Option<String>,
}

/// A region: countries and the policy that applies there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Stamped on records as `region`.
    pub name: String,
    /// ISO 3166-1 alpha-2 codes (`DE`), or subdivisions (`US-CA`) when the edge header
    /// sends them; matched case-insensitively.
    pub countries: Vec<String>,
    pub policy: String,
}

/// What to do with an event whose required consent is not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDenied {
    /// Not logged anywhere; answered `rejected` with `consent_denied`; counted.
    Drop,
    /// Logged without identifiers (`user_id`, `device_id`, `session_id`, IP, user agent).
    Strip,
}

/// IP address handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpMode {
    Keep,
    /// IPv4 to its /24, IPv6 to its /48.
    Truncate,
    Drop,
}

/// One policy. Paths are dotted: `user_id`, `context.ip`, `properties.email`,
/// `properties.*.token` (`*` is any one key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Stamped on records as `privacy_policy = "<name>@<version>"`; bump it on change.
    pub version: u32,
    /// Fields removed before anything is written.
    #[serde(default)]
    pub drop: Vec<FieldPath>,
    /// Fields replaced by their keyed HMAC-SHA256 (hex).
    #[serde(default)]
    pub pseudonymize: Vec<FieldPath>,
    /// `context.ip`: keep, truncate or drop.
    #[serde(default = "keep")]
    pub ip: IpMode,
    /// Consent categories each event needs; `"*"` applies to events not listed.
    #[serde(default)]
    pub consent: BTreeMap<String, Vec<String>>,
    /// Whether a category the event does not mention counts as granted.
    #[serde(default)]
    pub missing_consent_granted: bool,
    #[serde(default = "drop_denied")]
    pub on_consent_denied: OnDenied,
    /// `context.user_agent`: keep it, or reduce it to "Browser on OS".
    #[serde(default = "keep_agent")]
    pub user_agent: AgentMode,
    /// Emails, phone numbers and card numbers inside string property values: leave
    /// them (`off`), replace them by `[email]`… (`redact`), or by a keyed pseudonym
    /// (`hash`, `[email:<16 hex>]`, so equal values stay joinable).
    #[serde(default = "pii_off")]
    pub pii: PiiMode,
}

/// User agent handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentMode {
    Keep,
    /// "Chrome on Windows", "Safari on iOS", "Other on Android".
    Family,
}

/// Free-text PII handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiMode {
    Off,
    Redact,
    Hash,
}

fn keep_agent() -> AgentMode {
    AgentMode::Keep
}

fn pii_off() -> PiiMode {
    PiiMode::Off
}

fn keep() -> IpMode {
    IpMode::Keep
}

fn drop_denied() -> OnDenied {
    OnDenied::Drop
}

impl PrivacyConfig {
    /// Reads and parses a policy file.
    ///
    /// # Errors
    /// The file cannot be read or is not a valid policy file (naming the key).
    pub fn load(path: &Path) -> Result<PrivacyConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml_from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Every problem, with its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let names: Vec<&String> = self.regions.iter().map(|r| &r.name).collect();
        if !names.contains(&&self.default_region)
            && !self.policies.contains_key(&self.default_region)
        {
            problems.push(format!(
                "default_region: {:?} is neither a region nor a policy",
                self.default_region
            ));
        }
        for (i, region) in self.regions.iter().enumerate() {
            if !self.policies.contains_key(&region.policy) {
                problems.push(format!(
                    "regions[{i}].policy: no policy named {:?}",
                    region.policy
                ));
            }
        }
        let ids: Vec<&String> = self.hmac.keys.iter().map(|k| &k.id).collect();
        for id in self.hmac.current.iter().chain(&self.hmac.previous) {
            if !ids.contains(&id) {
                problems.push(format!("hmac: key {id:?} is not in hmac.keys"));
            }
        }
        for (i, key) in self.hmac.keys.iter().enumerate() {
            if key.file.is_some() == key.env.is_some() {
                problems.push(format!(
                    "hmac.keys[{i}]: give exactly one of `file` or `env`"
                ));
            }
        }
        problems
    }
}

fn toml_from_str(text: &str) -> Result<PrivacyConfig, String> {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())
}
