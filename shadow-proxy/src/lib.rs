//! `tollgate-shadow-proxy`: sits in front of two collector versions during a logging
//! migration. The client always gets the primary's answer, unchanged; a copy of each
//! request goes to the shadow through a bounded queue with its own timeout, so a slow or
//! dead shadow never slows the primary path (copies are dropped and counted instead).
//!
//! # Layout
//! - [`proxy`]: [`ProxyConfig`] and [`run`]: the listener, the primary path (bodies
//!   streamed through a tee that keeps the copy), the copy queue, the shadow thread at
//!   its own CPU priority, and the admin listener;
//! - [`compare`]: per-event outcomes of every side (read from the collectors' answers),
//!   counted per event name, segment and bridge; the bridge ratio new/old with a
//!   confidence interval and the A/A floor; the report as JSON, Prometheus text, HTML;
//! - [`mapping`]: renames, splits and merges between old and new names;
//! - [`offline`]: the same questions over what two collectors logged;
//! - [`mod@file`]: the configuration file, environment and flags, layered.

pub mod compare;
pub mod file;
pub mod mapping;
pub mod offline;
pub mod proxy;

pub use proxy::{ProxyConfig, RunError, SHADOW_HEADER, ShadowPriority, run, stable_fraction};
