//! Privacy: each region's policy applied to every event before anything is written.
//!
//! Enters: a validated event (or a rejected one, as received) and what locates its user
//! (a trusted edge header, else `context.country`). Leaves: the event with the policy's
//! fields dropped, pseudonymized (keyed HMAC-SHA256) and its IP truncated, or a verdict
//! to drop it (consent not granted). The policy id and region are stamped on the record.
//!
//! Policies live in `config/privacy.toml` (see `docs/privacy.md`); keys never live in
//! the configuration: a file or an environment variable, or one generated into the data
//! directory on first start when none is configured.

pub mod config;
pub mod detect;
mod engine;
mod path;
pub mod settings;

pub(crate) use engine::hex;
pub use engine::{Keys, Policy, Privacy, Pseudonyms, Verdict, agent_family, truncate_ip};
pub use path::FieldPath;

use std::io::Write;
use std::path::Path;

use config::{HmacConfig, KeyConfig, PrivacyConfig};

/// Id of the key generated into the data dir when none is configured.
pub const GENERATED_KEY_ID: &str = "generated";

/// Loads the policy file and its keys. `current_key`, when given, is the key pseudonyms
/// are made with, in place of the file's `[hmac].current` (its previous keys stay).
///
/// # Errors
/// Every problem: unreadable file, bad policy, missing or short keys.
pub fn load(
    file: &Path,
    data_dir: &Path,
    current_key: Option<&KeyConfig>,
) -> Result<Privacy, Vec<String>> {
    let mut config = PrivacyConfig::load(file).map_err(|e| vec![e])?;
    if let Some(key) = current_key {
        config.hmac.keys.retain(|k| k.id != key.id);
        config.hmac.keys.push(key.clone());
        config.hmac.current = Some(key.id.clone());
    }
    let keys =
        load_keys(&config.hmac, data_dir).map_err(|e| vec![format!("{}: {e}", file.display())])?;
    Privacy::new(&config, keys).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| format!("{}: {p}", file.display()))
            .collect()
    })
}

/// Loads the policy file for a dry run: configured keys if there are, else a throwaway
/// random key (pseudonyms then differ from the collector's), and nothing is written.
///
/// # Errors
/// As [`load`].
pub fn load_for_review(file: &Path) -> Result<(Privacy, bool), Vec<String>> {
    let config = PrivacyConfig::load(file).map_err(|e| vec![e])?;
    let throwaway = config.hmac.current.is_none();
    let keys = if throwaway {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| vec![e.to_string()])?;
        Keys::new(("review-only".to_owned(), key), Vec::new()).map_err(|e| vec![e])?
    } else {
        load_keys(&config.hmac, Path::new("."))
            .map_err(|e| vec![format!("{}: {e}", file.display())])?
    };
    Ok((Privacy::new(&config, keys)?, throwaway))
}

fn load_keys(hmac: &HmacConfig, data_dir: &Path) -> Result<Keys, String> {
    let find = |id: &String| -> Result<(String, Vec<u8>), String> {
        let key = hmac
            .keys
            .iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| format!("hmac key {id:?} is not declared"))?;
        Ok((id.clone(), material(key)?))
    };
    let current = match &hmac.current {
        Some(id) => find(id)?,
        None => (GENERATED_KEY_ID.to_owned(), generated_key(data_dir)?),
    };
    let previous = hmac.previous.iter().map(find).collect::<Result<_, _>>()?;
    Keys::new(current, previous)
}

/// A key's bytes: hex text (64+ digits) is decoded, anything else is taken as is.
fn material(key: &KeyConfig) -> Result<Vec<u8>, String> {
    let text = match (&key.file, &key.env) {
        (Some(path), _) => {
            std::fs::read(path).map_err(|e| format!("key {:?}: {}: {e}", key.id, path.display()))?
        }
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| format!("key {:?}: environment variable {var} is not set", key.id))?
            .into_bytes(),
        (None, None) => return Err(format!("key {:?} has neither file nor env", key.id)),
    };
    let trimmed = text.trim_ascii();
    Ok(decode_hex(trimmed).unwrap_or_else(|| trimmed.to_vec()))
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() < 64 || !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// The key in `<data_dir>/privacy/hmac-generated.key`, created (mode 0600) on first use.
fn generated_key(data_dir: &Path) -> Result<Vec<u8>, String> {
    let dir = data_dir.join("privacy");
    let path = dir.join("hmac-generated.key");
    if let Ok(text) = std::fs::read(&path) {
        return decode_hex(text.trim_ascii())
            .ok_or_else(|| format!("{} is not a hex key", path.display()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for a key: {e}"))?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
    };
    file.write_all(hex.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::warn!(
        file = %path.display(),
        "no HMAC key configured: generated one for pseudonyms; keep it (and back it up) to keep pseudonyms stable"
    );
    Ok(key.to_vec())
}
