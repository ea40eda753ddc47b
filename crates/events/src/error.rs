//! Typed errors of the codec, the Schema Registry client and the headers.

/// Why bytes could not be turned into an [`crate::Event`]. Every variant but
/// [`DecodeError::RegistryUnavailable`] is permanent: the same bytes will fail again, so a
/// consumer dead-letters the record. [`DecodeError::is_transient`] tells the two apart.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("truncated {framing} header: {len} bytes, need {need}")]
    TruncatedHeader { framing: &'static str, len: usize, need: usize },
    #[error("unknown magic bytes {0}: neither Avro single-object (c3 01) nor Confluent wire format (00)")]
    UnknownMagic(String),
    #[error(
        "unknown writer schema fingerprint {0} (CRC-64-AVRO, little-endian as in the header): not a schema this build ships"
    )]
    UnknownFingerprint(String),
    #[error("unknown schema id {0}: the Schema Registry does not know it")]
    UnknownSchemaId(u32),
    #[error("Confluent-framed value with schema id {0}, but no Schema Registry is configured")]
    NoRegistry(u32),
    #[error("Schema Registry unreachable: {0}")]
    RegistryUnavailable(#[source] RegistryError),
    #[error("Schema Registry error: {0}")]
    Registry(#[source] RegistryError),
    #[error("writer schema is {0}, not an orderflow event")]
    UnknownType(String),
    #[error("writer schema cannot be read as {reader}: {problem}")]
    Incompatible { reader: &'static str, problem: String },
    #[error("invalid Avro datum: {0}")]
    Malformed(String),
    #[error("invalid event: {field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("an event of type {actual} does not belong on topic {topic}")]
    WrongTopic { topic: String, actual: &'static str },
}

impl DecodeError {
    /// True when retrying later may succeed (the registry was unreachable); false when the
    /// bytes themselves are bad (dead-letter them).
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::RegistryUnavailable(_))
    }

    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        DecodeError::Malformed(what.into())
    }
}

/// Why an [`crate::Event`] could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("invalid event: {field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("Schema Registry unreachable: {0}")]
    RegistryUnavailable(#[source] RegistryError),
    #[error("Schema Registry error: {0}")]
    Registry(#[source] RegistryError),
}

impl EncodeError {
    /// True when retrying later may succeed (the registry was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, EncodeError::RegistryUnavailable(_))
    }
}

/// A failed Schema Registry call.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("bad Schema Registry URL {url:?}: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("{what}: {source}")]
    Unreachable {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status} {body}")]
    Status { what: String, status: u16, body: String },
    #[error("{what}: not found")]
    NotFound { what: String },
    #[error("{what}: unexpected response: {problem}")]
    BadResponse { what: String, problem: String },
}

impl RegistryError {
    /// Network errors, timeouts, 5xx and 429 are worth retrying; the rest are not.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A missing or malformed CloudEvents / trace header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("header {header}: {problem}")]
    Invalid { header: &'static str, problem: String },
}
