//! Reading what collectors write, for every tool that checks it: the data-quality audit,
//! the load tester's reconciliation and the shadow proxy's offline compare. The
//! collector's own sinks write; this crate only reads, so the tools need nothing else of
//! the collector.
//!
//! # Layout
//! - [`segments()`]: the local log's segment files, in order, read in large chunks;
//! - [`topics`]: Kafka topics from the beginning (or a time) until idle, and the
//!   `--kafka` flags.

pub mod segments;
pub mod topics;

pub use segments::{Blocks, for_each_line, segments, segments_from, split_lines};
pub use topics::{
    Start, TopicArgs, TopicError, TopicSource, for_each_message, for_each_message_from,
};
