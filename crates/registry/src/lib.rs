//! The registry: every consumer of orderflow, with its name, binary, default port, topics
//! and how to run its handler alone ([`Spec`]). What lists consumers reads this list:
//! `orderflow replay` and `orderflow consumers` (and through it `scripts/stack`), the bench's
//! per-consumer figures, and the checks that docs/consumers.md, the README and
//! docker-compose.yml name every consumer (this crate's tests).
//!
//! A consumer is registered by one dependency line in this crate's Cargo.toml (build.rs
//! turns those lines into [`CONSUMERS`]).
//!
//! # Must not
//! Hold anything about a consumer beyond what its crate's `CONSUMER` says.

pub use orderflow_consumer_kit::{Bare, Spec};

include!(concat!(env!("OUT_DIR"), "/consumers.rs"));

/// The consumer named `name`.
pub fn find(name: &str) -> Option<&'static Spec> {
    CONSUMERS.iter().copied().find(|spec| spec.name == name)
}

/// The consumer named `name`, or an error listing the known ones.
pub fn get(name: &str) -> anyhow::Result<&'static Spec> {
    find(name).ok_or_else(|| anyhow::anyhow!("no consumer named {name}; known: {}", names().join(", ")))
}

/// Every consumer's name, in registry order.
pub fn names() -> Vec<&'static str> {
    CONSUMERS.iter().map(|spec| spec.name).collect()
}
