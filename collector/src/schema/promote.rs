//! `tollgate-collector schema promote <event> v<N>`: a candidate becomes a live version.
//!
//! The folder is checked first as `schema check` checks it (the candidate is checked
//! as the version it becomes); any violation of that event refuses the promotion.
//! Then `v<N>.candidate.json` is renamed to `v<N>.json` in place (one rename, so a
//! collector reloading meanwhile sees either the candidate or the live version, never
//! neither). Collectors pick it up on their next reload.

use std::path::{Path, PathBuf};

use super::check::{self, Finding, Level};

/// A promotion done.
#[derive(Debug)]
pub struct Promoted {
    pub from: PathBuf,
    pub to: PathBuf,
    /// What the check said about the event's new version (compatible or declared
    /// breaking steps), for the record.
    pub findings: Vec<Finding>,
}

/// Why a promotion was refused.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The folder cannot be read, or names no such candidate: a usage error.
    #[error("{0}")]
    Usage(String),
    /// The check found violations of the event: nothing was renamed.
    #[error("`{event}` v{version} fails the check:\n{}", list(.findings))]
    Check {
        event: String,
        version: u32,
        findings: Vec<Finding>,
    },
    #[error("renaming {}: {source}", .from.display())]
    Rename {
        from: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One line per finding, naming its property.
fn list(findings: &[Finding]) -> String {
    let lines: Vec<String> = findings
        .iter()
        .map(|f| match &f.property {
            Some(p) => format!(
                "  - v{} property `{p}`: {} ({})",
                f.version, f.message, f.rule
            ),
            None => format!("  - v{}: {} ({})", f.version, f.message, f.rule),
        })
        .collect();
    lines.join("\n")
}

/// Promotes `event`'s candidate `version` in `dir`.
///
/// # Errors
/// See [`PromoteError`]; on any error nothing was changed.
pub fn promote(dir: &Path, event: &str, version: u32) -> Result<Promoted, PromoteError> {
    let (files, _) = super::files(dir).map_err(|p| PromoteError::Usage(p.join("; ")))?;
    let Some(file) = files
        .iter()
        .find(|f| f.candidate && f.event == event && f.version == version)
    else {
        let known: Vec<String> = files
            .iter()
            .filter(|f| f.candidate)
            .map(|f| format!("{} v{}", f.event, f.version))
            .collect();
        return Err(PromoteError::Usage(format!(
            "{}: no candidate v{version} of `{event}` (candidates: {})",
            dir.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let report = check::check(dir, None).map_err(PromoteError::Usage)?;
    let (violations, findings): (Vec<Finding>, Vec<Finding>) = report
        .findings
        .into_iter()
        .filter(|f| f.event == event && (f.version == version || f.level == Level::Violation))
        .partition(|f| f.level == Level::Violation);
    if !violations.is_empty() {
        return Err(PromoteError::Check {
            event: event.to_owned(),
            version,
            findings: violations,
        });
    }
    let name = file
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".candidate.json"))
        .map(|stem| format!("{stem}.json"))
        .ok_or_else(|| PromoteError::Usage(format!("{}: not a candidate", file.path.display())))?;
    let to = file.path.with_file_name(name);
    std::fs::rename(&file.path, &to).map_err(|source| PromoteError::Rename {
        from: file.path.clone(),
        source,
    })?;
    Ok(Promoted {
        from: file.path.clone(),
        to,
        findings,
    })
}
