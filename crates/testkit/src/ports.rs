//! Ports for servers a test starts, stops and starts again on the same port (a broker node, a
//! private Postgres, a demo's services).
//!
//! A port picked with `bind(":0")` is in Linux's ephemeral range (32768 to 60999), where every
//! outgoing connection of every test running in parallel also takes its local port: once the
//! server stops, a client socket may take its port, and the restarted server cannot bind it
//! (seen: a killed Kafka node failing to come back). Ports below that range are only ever
//! taken by servers that ask for them by number.

use std::net::TcpListener;
use std::ops::Range;

/// Where [`free_block`] looks: below the ephemeral range, above the well-known services.
pub const STABLE: Range<u16> = 20_000..32_000;

/// The first port of a block in which every `offset` of `offsets` is free now, below the
/// ephemeral range. Tries different blocks spread over [`STABLE`].
pub fn free_block(offsets: &[u16]) -> anyhow::Result<u16> {
    let span = offsets.iter().copied().max().unwrap_or(0) + 1;
    anyhow::ensure!(span < STABLE.end - STABLE.start, "a block of {span} ports does not fit in {STABLE:?}");
    let seed = std::process::id() as usize
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
            as usize;
    let choices = usize::from(STABLE.end - STABLE.start - span);
    for attempt in 0..500 {
        let base = STABLE.start + (seed.wrapping_add(attempt * 7919) % choices) as u16;
        let listeners: Vec<_> = offsets.iter().map(|o| TcpListener::bind(("127.0.0.1", base + o))).collect();
        if listeners.iter().all(Result::is_ok) {
            return Ok(base);
        }
    }
    anyhow::bail!("no block of free ports {offsets:?} on 127.0.0.1 in {STABLE:?}")
}

/// One free port below the ephemeral range.
pub fn free_port() -> anyhow::Result<u16> {
    free_block(&[0])
}
