//! How old event names relate to new ones during a migration, shared by the live
//! comparison and `compare`:
//!
//! ```toml
//! # Renames: the new logging calls `signup` `account_created`; one for one.
//! [rename]
//! signup = "account_created"
//!
//! # Splits and merges, with the number of new events expected per old one.
//! [[bridge]]
//! name = "checkout"                                  # optional label
//! old = ["purchase"]
//! new = ["order_placed", "payment_captured"]          # a split: two per purchase
//! expected_ratio = 2.0
//!
//! [[bridge]]
//! old = ["item_view", "item_impression"]              # a merge
//! new = ["content_view"]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The mapping file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Old name → new name, expected one for one.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Splits and merges.
    #[serde(default)]
    pub bridge: Vec<BridgeSpec>,
}

/// One split or merge as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub old: Vec<String>,
    pub new: Vec<String>,
    /// New events expected per old one.
    #[serde(default = "one")]
    pub expected_ratio: f64,
}

fn one() -> f64 {
    1.0
}

/// A bridge metric: Σ new names on the new side ÷ Σ old names on the old side, which
/// should be `expected` where nothing but the names changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    pub label: String,
    pub old: Vec<String>,
    pub new: Vec<String>,
    pub expected: f64,
}

impl Mapping {
    /// Reads and checks a mapping file.
    ///
    /// # Errors
    /// Unreadable or invalid TOML, an empty side, or a ratio that is not positive.
    pub fn load(path: &Path) -> Result<Mapping, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mapping: Mapping =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        mapping
            .check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(mapping)
    }

    /// Every rename and split or merge as one list of bridges.
    pub fn bridges(&self) -> Vec<Bridge> {
        let renames = self.rename.iter().map(|(old, new)| Bridge {
            label: format!("{old}→{new}"),
            old: vec![old.clone()],
            new: vec![new.clone()],
            expected: 1.0,
        });
        let others = self.bridge.iter().map(|b| Bridge {
            label: b
                .name
                .clone()
                .unwrap_or_else(|| format!("{}→{}", b.old.join("+"), b.new.join("+"))),
            old: b.old.clone(),
            new: b.new.clone(),
            expected: b.expected_ratio,
        });
        renames.chain(others).collect()
    }

    /// Only the splits and merges (`compare` applies renames to names instead).
    pub fn without_renames(&self) -> Mapping {
        Mapping {
            rename: BTreeMap::new(),
            bridge: self.bridge.clone(),
        }
    }

    /// Every event name some bridge covers: their own per-name ratio says nothing.
    pub fn mapped_names(&self) -> std::collections::BTreeSet<String> {
        self.bridges()
            .into_iter()
            .flat_map(|b| b.old.into_iter().chain(b.new))
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        for bridge in self.bridges() {
            if bridge.old.is_empty() || bridge.new.is_empty() {
                return Err(format!("bridge {} needs old and new names", bridge.label));
            }
            if !(bridge.expected.is_finite() && bridge.expected > 0.0) {
                return Err(format!(
                    "bridge {}: expected_ratio must be above 0",
                    bridge.label
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_and_bridges_become_one_list_and_mistakes_are_named() {
        let mapping: Mapping = toml::from_str(
            "[rename]\nsignup = \"account_created\"\n[[bridge]]\nold = [\"item_view\", \"item_impression\"]\nnew = [\"content_view\"]\n[[bridge]]\nname = \"checkout\"\nold = [\"purchase\"]\nnew = [\"order_placed\", \"payment_captured\"]\nexpected_ratio = 2.0\n",
        )
        .unwrap();
        mapping.check().unwrap();
        let labels: Vec<(String, f64)> = mapping
            .bridges()
            .into_iter()
            .map(|b| (b.label, b.expected))
            .collect();
        assert_eq!(
            labels,
            [
                ("signup→account_created".to_owned(), 1.0),
                ("item_view+item_impression→content_view".to_owned(), 1.0),
                ("checkout".to_owned(), 2.0)
            ]
        );
        assert!(mapping.mapped_names().contains("payment_captured"));

        let empty: Mapping = toml::from_str("[[bridge]]\nold = [\"a\"]\nnew = []\n").unwrap();
        assert!(empty.check().unwrap_err().contains("needs old and new"));
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/mapping.toml");
        let shipped = Mapping::load(&shipped).unwrap();
        assert_eq!(shipped.bridges().len(), 3);
        assert_eq!(shipped.bridges()[1].expected, 2.0);
        let zero: Mapping =
            toml::from_str("[[bridge]]\nold = [\"a\"]\nnew = [\"c\"]\nexpected_ratio = 0\n")
                .unwrap();
        assert!(zero.check().unwrap_err().contains("expected_ratio"));
    }
}
