//! Consistency tokens: where the events of a write landed, so that a read can wait until the
//! consumer it asks has applied them (docs/read-your-writes.md).
//!
//! The ingress puts one in every 202 (`consistency_token`); every read endpoint of every
//! consumer accepts it as `?after=<token>` or in the [`HEADER`] request header. It is opaque to
//! clients: `v1.` and the base64url (no padding) of `topic:partition:offset` entries joined by
//! `,`, one per partition (the highest offset written there).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The request header that carries a token (the query parameter is `after`).
pub const HEADER: &str = "consistency-token";
/// The query parameter that carries a token.
pub const QUERY_PARAM: &str = "after";
/// Longest token accepted, in bytes.
pub const MAX_LEN: usize = 4096;
const PREFIX: &str = "v1.";

/// Where the events of a write landed: per (topic, partition), the highest offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Token {
    positions: BTreeMap<(String, i32), i64>,
}

impl Token {
    /// A token for records at these `(topic, partition, offset)`s.
    pub fn new<'a>(written: impl IntoIterator<Item = (&'a str, i32, i64)>) -> Token {
        let mut token = Token::default();
        for (topic, partition, offset) in written {
            let entry = token.positions.entry((topic.to_owned(), partition)).or_insert(offset);
            *entry = (*entry).max(offset);
        }
        token
    }

    /// `(topic, partition, offset)` of each partition, in order.
    pub fn positions(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.positions.iter().map(|((topic, partition), offset)| (topic.as_str(), *partition, *offset))
    }

    /// The token as clients see it: URL-safe, opaque.
    pub fn encode(&self) -> String {
        let text: Vec<String> =
            self.positions().map(|(topic, partition, offset)| format!("{topic}:{partition}:{offset}")).collect();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(text.join(",")))
    }

    /// Read a token a client sent; the error says what is wrong with it.
    pub fn parse(token: &str) -> Result<Token, String> {
        if token.len() > MAX_LEN {
            return Err(format!("longer than {MAX_LEN} bytes"));
        }
        let Some(body) = token.strip_prefix(PREFIX) else {
            return Err(
                "not a consistency token (it starts with v1.); pass the ingress's consistency_token as is".into()
            );
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| "not a consistency token (bad encoding)".to_owned())?;
        let text = String::from_utf8(bytes).map_err(|_| "not a consistency token (bad encoding)".to_owned())?;
        let mut positions = Vec::new();
        for entry in text.split(',') {
            let mut fields = entry.rsplitn(3, ':');
            let (Some(offset), Some(partition), Some(topic)) = (fields.next(), fields.next(), fields.next()) else {
                return Err("not a consistency token (bad entry)".into());
            };
            let valid_topic = !topic.is_empty()
                && topic.len() <= 249
                && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            let partition: i32 = partition.parse().map_err(|_| "not a consistency token (bad partition)".to_owned())?;
            let offset: i64 = offset.parse().map_err(|_| "not a consistency token (bad offset)".to_owned())?;
            if !valid_topic || partition < 0 || offset < 0 {
                return Err("not a consistency token (bad entry)".into());
            }
            positions.push((topic, partition, offset));
        }
        Ok(Token::new(positions))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_keeps_the_highest_offset_per_partition() {
        let token = Token::new([("orders.v1", 2, 40), ("orders.v1", 2, 42), ("inventory.v1", 0, 7)]);
        let encoded = token.encode();
        assert!(encoded.starts_with("v1."));
        assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')), "{encoded}");
        let parsed = Token::parse(&encoded).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.positions().collect::<Vec<_>>(), [("inventory.v1", 0, 7), ("orders.v1", 2, 42)]);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let encode = |text: &str| format!("v1.{}", URL_SAFE_NO_PAD.encode(text));
        for (garbage, reason) in [
            ("hello".to_owned(), "starts with v1."),
            ("v1.***".to_owned(), "bad encoding"),
            (encode("orders.v1:x:1"), "bad partition"),
            (encode("orders.v1:1:-5"), "bad entry"),
            (encode("orders v1:1:5"), "bad entry"),
            (encode("nocolons"), "bad entry"),
            ("v1.".to_owned() + &"A".repeat(MAX_LEN), "longer than"),
        ] {
            let error = Token::parse(&garbage).unwrap_err();
            assert!(error.contains(reason), "{garbage}: {error}");
        }
    }
}
