//! Bearer tokens, for every API a client calls (the ingress's write API, each consumer's read
//! API): parsing the configured list, checking a request's `Authorization` header in constant
//! time, and the [`Secret`] a token list travels in. Token values are never logged or printed.

use anyhow::{Context, bail};
use axum::http::HeaderValue;
use subtle::{Choice, ConstantTimeEq};

/// Names plain tokens (`token-<12 hex>`); the value of `orderflow_events::EVENT_ID_NAMESPACE`,
/// so the names, and the ingress's key scopes built on them, are what they always were.
const PLAIN_TOKEN_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f72_6465_7266_6c6f_7700_0000_0000_0001);

/// A value that must never reach a log line: `Debug` prints a placeholder.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// One client allowed to call an API.
struct Client {
    /// Stable identity of the client: scopes its `Idempotency-Key`s and appears in logs.
    name: String,
    token: Vec<u8>,
}

/// The accepted tokens.
pub struct Tokens {
    clients: Vec<Client>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.clients.iter().map(|c| &c.name)).finish()
    }
}

impl Tokens {
    /// Parse entries separated by commas or newlines; each `name:token` or a plain token
    /// (named `token-<hash prefix>`, stable across restarts and reorderings). Blank entries
    /// and `#` comments are skipped.
    pub fn parse(list: &str) -> anyhow::Result<Tokens> {
        let mut clients: Vec<Client> = Vec::new();
        for (i, entry) in list.split([',', '\n']).map(str::trim).enumerate() {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let (name, token) = match entry.split_once(':') {
                Some((name, token)) => (name.trim().to_owned(), token.trim()),
                None => {
                    let id = uuid::Uuid::new_v5(&PLAIN_TOKEN_NAMESPACE, entry.as_bytes()).simple().to_string();
                    (format!("token-{}", &id[..12]), entry)
                }
            };
            if name.is_empty() || token.is_empty() {
                bail!("token entry {} has an empty name or token (expected `name:token` or `token`)", i + 1);
            }
            if token.bytes().any(|b| !b.is_ascii_graphic()) {
                bail!("token of {name:?} contains characters a header cannot carry");
            }
            if clients.iter().any(|c| c.name == name) {
                bail!("token name {name:?} appears twice");
            }
            clients.push(Client { name, token: token.as_bytes().to_vec() });
        }
        Ok(Tokens { clients })
    }

    /// Tokens from a list (an environment variable) and/or a tokens file, combined.
    pub fn load(env_list: Option<&str>, file: Option<&std::path::Path>) -> anyhow::Result<Tokens> {
        let mut list = env_list.unwrap_or_default().to_owned();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("Failed to read tokens file {}", path.display()))?;
            list.push('\n');
            list.push_str(&text);
        }
        Tokens::parse(&list)
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The clients' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(|c| c.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// The name of the client whose token the header carries (`Bearer <token>`), comparing
    /// against every token in constant time.
    pub fn authenticate(&self, header: Option<&HeaderValue>) -> Option<&str> {
        let presented = header?.as_bytes();
        let scheme = presented.get(..7)?;
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return None;
        }
        let presented = presented[7..].trim_ascii();
        let mut found: Option<&str> = None;
        for client in &self.clients {
            let equal: Choice = client.token.as_slice().ct_eq(presented);
            if bool::from(equal) {
                found = Some(&client.name);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn named_and_plain_tokens_authenticate_their_client() {
        let tokens = Tokens::parse("checkout:s3cret-1, plain-token-2\n# comment\n").unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.authenticate(Some(&header("Bearer s3cret-1"))), Some("checkout"));
        assert!(tokens.authenticate(Some(&header("bearer plain-token-2"))).unwrap().starts_with("token-"));
    }

    #[test]
    fn wrong_missing_or_malformed_credentials_are_refused() {
        let tokens = Tokens::parse("checkout:s3cret-1").unwrap();
        assert_eq!(tokens.authenticate(None), None);
        assert_eq!(tokens.authenticate(Some(&header("Bearer s3cret-2"))), None);
        assert_eq!(tokens.authenticate(Some(&header("Bearer s3cret-1x"))), None);
        assert_eq!(tokens.authenticate(Some(&header("Basic s3cret-1"))), None);
        assert_eq!(tokens.authenticate(Some(&header("Bearer"))), None);
    }

    #[test]
    fn bad_token_lists_are_rejected_without_echoing_tokens() {
        let err = Tokens::parse("a:x,a:y").unwrap_err().to_string();
        assert!(err.contains("twice") && !err.contains(":y"), "{err}");
        assert!(Tokens::parse("name:").is_err());
        assert!(Tokens::parse("").unwrap().is_empty());
    }

    #[test]
    fn plain_tokens_keep_the_names_they_always_had() {
        // The name scopes the ingress's Idempotency-Keys: it must not change between versions.
        let tokens = Tokens::parse("plain-token-2").unwrap();
        let name = tokens.authenticate(Some(&header("Bearer plain-token-2"))).unwrap().to_owned();
        let expected = uuid::Uuid::new_v5(&PLAIN_TOKEN_NAMESPACE, b"plain-token-2").simple().to_string();
        assert_eq!(name, format!("token-{}", &expected[..12]));
        assert_eq!(PLAIN_TOKEN_NAMESPACE.to_string(), "6f726465-7266-6c6f-7700-000000000001");
    }

    #[test]
    fn debug_output_names_clients_but_never_tokens() {
        let tokens = Tokens::parse("checkout:s3cret-1").unwrap();
        let shown = format!("{tokens:?}");
        assert!(shown.contains("checkout") && !shown.contains("s3cret"), "{shown}");
    }
}
