//! Event ⇄ bytes. Two framings, told apart by the first byte on decode:
//!
//! * Avro single-object encoding (default): `C3 01`, the 8-byte little-endian CRC-64-AVRO
//!   fingerprint of the writer schema's canonical form, then the datum. The writer schema must
//!   be one this build ships (`schemas/`).
//! * Confluent wire format (when a Schema Registry is configured): `00`, the 4-byte big-endian
//!   schema id, then the datum. Writer schemas are fetched by id and cached.
//!
//! When the writer schema is the current one (same canonical form) the direct decoder in
//! [`crate::binary`] runs without touching apache-avro; any other writer is resolved to the
//! current reader schema by apache-avro. Decoding never panics and never allocates more than
//! the input's size (own decoder) or [`crate::schema::MAX_AVRO_ALLOCATION`] (apache-avro).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock, RwLock};

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;

use crate::error::{DecodeError, EncodeError, RegistryError};
use crate::event::{Event, EventKind};
use crate::registry::{RegistryClient, value_subject};
use crate::schema::{canonical_form, rabin, shipped};
use crate::{avro_value, binary};

/// First two bytes of an Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// First byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0x00;
const SINGLE_OBJECT_HEADER: usize = 10;
const CONFLUENT_HEADER: usize = 5;

/// How a writer schema (known by fingerprint or registry id) is read.
#[derive(Debug)]
enum Writer {
    /// Same canonical form as the current schema of this kind: direct decoder.
    Current(EventKind),
    /// Another version of a known event: apache-avro resolution.
    Resolve(EventKind, Box<Schema>),
    /// Known but unreadable (not our event, or incompatible); the error repeats on every use.
    Unreadable(Arc<DecodeError>),
}

/// Encoder/decoder of [`Event`]s. Cheap to clone (clones share caches); `Send + Sync`.
#[derive(Clone)]
pub struct Codec {
    registry: Option<RegistryClient>,
    /// Registry schema id → how to read it.
    by_id: Arc<RwLock<HashMap<u32, Arc<Writer>>>>,
    /// Registry id of the current schema per [`EventKind`] (index = discriminant), once registered.
    own_ids: Arc<[OnceLock<u32>; EventKind::ALL.len()]>,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("registry", &self.registry.is_some()).finish()
    }
}

#[expect(clippy::large_enum_variant, reason = "a short-lived return value; boxing would add an allocation per decode")]
enum Pending {
    Done(Result<Event, DecodeError>),
    Fetch(u32),
}

impl Codec {
    /// Single-object encoding against the shipped schemas; decodes both framings (Confluent
    /// ones only for ids already cached, which without a registry means none).
    pub fn new() -> Self {
        shipped();
        Codec { registry: None, by_id: Arc::default(), own_ids: Arc::default() }
    }

    /// Confluent wire format with the registry at `url` (`SCHEMA_REGISTRY_URL`); still decodes
    /// single-object values too.
    pub fn with_registry(url: &str) -> Result<Self, RegistryError> {
        let registry = RegistryClient::new(url)?;
        Ok(Codec { registry: Some(registry), ..Codec::new() })
    }

    /// `with_registry` when a URL is given, else `new`.
    pub fn from_config(schema_registry_url: Option<&str>) -> Result<Self, RegistryError> {
        schema_registry_url.map_or_else(|| Ok(Codec::new()), Codec::with_registry)
    }

    pub fn registry(&self) -> Option<&RegistryClient> {
        self.registry.as_ref()
    }

    /// Encodes in this codec's framing, for the event's contract topic (`orders.v1`, ...). With
    /// a registry, the first event of each kind registers the current schema under
    /// `{topic}-value`; later ones use the cached id.
    pub async fn encode(&self, event: &Event) -> Result<Vec<u8>, EncodeError> {
        self.encode_to(event.kind().topic(), event).await
    }

    /// [`Codec::encode`] for a record going to `topic`, which may differ from the contract's
    /// (a namespaced `staging.orders.v1`): with a registry the schema is registered under
    /// `{topic}-value`, as TopicNameStrategy readers expect.
    pub async fn encode_to(&self, topic: &str, event: &Event) -> Result<Vec<u8>, EncodeError> {
        let Some(registry) = &self.registry else {
            return self.encode_single_object(event);
        };
        check(event)?;
        let kind = event.kind();
        let register = || async {
            let current = shipped().current(kind);
            let id = registry.register(&value_subject(topic), current.json).await.map_err(|e| {
                if e.is_transient() { EncodeError::RegistryUnavailable(e) } else { EncodeError::Registry(e) }
            })?;
            write(&self.by_id).insert(id, Arc::new(Writer::Current(kind)));
            Ok::<u32, EncodeError>(id)
        };
        let id = if topic == kind.topic() {
            // The contract topic: the id is kept per kind, no lookup on the hot path.
            let slot = &self.own_ids[kind as usize];
            match slot.get() {
                Some(&id) => id,
                None => {
                    let id = register().await?;
                    *slot.get_or_init(|| id)
                }
            }
        } else {
            // Another topic: the registry client caches the id per subject.
            match registry.registered_id(&value_subject(topic), shipped().current(kind).json) {
                Some(id) => id,
                None => register().await?,
            }
        };
        let mut buf = Vec::with_capacity(256);
        buf.push(CONFLUENT_MAGIC);
        buf.extend_from_slice(&id.to_be_bytes());
        binary::encode(event, &mut buf);
        Ok(buf)
    }

    /// Single-object encoding, whatever this codec's framing (no I/O).
    pub fn encode_single_object(&self, event: &Event) -> Result<Vec<u8>, EncodeError> {
        check(event)?;
        let current = shipped().current(event.kind());
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&SINGLE_OBJECT_MAGIC);
        buf.extend_from_slice(&current.fingerprint.to_le_bytes());
        binary::encode(event, &mut buf);
        Ok(buf)
    }

    /// Decodes either framing. Awaits only to fetch an unknown registry schema id.
    pub async fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        match self.decode_without_io(bytes) {
            Pending::Done(r) => r,
            Pending::Fetch(id) => {
                let writer = self.fetch_writer(id).await?;
                read_with(&writer, &bytes[CONFLUENT_HEADER..])
            }
        }
    }

    /// Decodes and checks that the event belongs on `topic`.
    pub async fn decode_for_topic(&self, topic: &str, bytes: &[u8]) -> Result<Event, DecodeError> {
        let event = self.decode(bytes).await?;
        if event.topic() != topic {
            return Err(DecodeError::WrongTopic { topic: topic.to_owned(), actual: event.ce_type() });
        }
        Ok(event)
    }

    /// Decodes into the event's JSON shape (for `tail`/`export` tools).
    pub async fn decode_json(&self, bytes: &[u8]) -> Result<serde_json::Value, DecodeError> {
        let event = self.decode(bytes).await?;
        serde_json::to_value(&event).map_err(|e| DecodeError::malformed(format!("event to JSON: {e}")))
    }

    fn decode_without_io(&self, bytes: &[u8]) -> Pending {
        match bytes {
            [] => Pending::Done(Err(DecodeError::Empty)),
            [0xC3, 0x01, ..] => {
                if bytes.len() < SINGLE_OBJECT_HEADER {
                    return Pending::Done(Err(DecodeError::TruncatedHeader {
                        framing: "single-object",
                        len: bytes.len(),
                        need: SINGLE_OBJECT_HEADER,
                    }));
                }
                let mut fp = [0u8; 8];
                fp.copy_from_slice(&bytes[2..SINGLE_OBJECT_HEADER]);
                let datum = &bytes[SINGLE_OBJECT_HEADER..];
                Pending::Done(match shipped().by_fingerprint(u64::from_le_bytes(fp)) {
                    None => Err(DecodeError::UnknownFingerprint(hex(&fp))),
                    Some(s) if s.fingerprint == shipped().current(s.kind).fingerprint => binary::decode(s.kind, datum),
                    Some(s) => resolve(s.kind, &s.schema, datum),
                })
            }
            [CONFLUENT_MAGIC, ..] => {
                if bytes.len() < CONFLUENT_HEADER {
                    return Pending::Done(Err(DecodeError::TruncatedHeader {
                        framing: "Confluent",
                        len: bytes.len(),
                        need: CONFLUENT_HEADER,
                    }));
                }
                let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                let cached = read(&self.by_id).get(&id).cloned();
                match (cached, &self.registry) {
                    (Some(w), _) => Pending::Done(read_with(&w, &bytes[CONFLUENT_HEADER..])),
                    (None, None) => Pending::Done(Err(DecodeError::NoRegistry(id))),
                    (None, Some(_)) => Pending::Fetch(id),
                }
            }
            _ => Pending::Done(Err(DecodeError::UnknownMagic(hex(&bytes[..bytes.len().min(2)])))),
        }
    }

    async fn fetch_writer(&self, id: u32) -> Result<Arc<Writer>, DecodeError> {
        let Some(registry) = &self.registry else {
            return Err(DecodeError::NoRegistry(id));
        };
        let text = registry.schema_by_id(id).await.map_err(|e| match e {
            RegistryError::NotFound { .. } => DecodeError::UnknownSchemaId(id),
            e if e.is_transient() => DecodeError::RegistryUnavailable(e),
            e => DecodeError::Registry(e),
        })?;
        let writer = Arc::new(writer_for(&text));
        write(&self.by_id).insert(id, writer.clone());
        Ok(writer)
    }
}

fn check(event: &Event) -> Result<(), EncodeError> {
    event.validate().map_err(|(field, e)| EncodeError::Invalid { field, problem: e.0 })
}

/// Classifies a writer schema fetched from the registry.
fn writer_for(text: &str) -> Writer {
    let unreadable = |e: DecodeError| Writer::Unreadable(Arc::new(e));
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return unreadable(DecodeError::Registry(RegistryError::BadResponse {
            what: "writer schema".into(),
            problem: "not JSON".into(),
        }));
    };
    if let Ok(pcf) = canonical_form(&json) {
        let fp = rabin(pcf.as_bytes());
        if let Some(kind) = EventKind::ALL.into_iter().find(|&k| shipped().current(k).fingerprint == fp) {
            return Writer::Current(kind);
        }
    }
    let parsed = catch_unwind(|| Schema::parse_str(text));
    let schema = match parsed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return unreadable(DecodeError::Incompatible {
                reader: "any orderflow event",
                problem: format!("writer schema does not parse: {e}"),
            });
        }
        Err(_) => {
            return unreadable(DecodeError::Incompatible {
                reader: "any orderflow event",
                problem: "writer schema does not parse".into(),
            });
        }
    };
    let name = schema.name().map(|n| n.fullname(None)).unwrap_or_else(|| "an unnamed schema".into());
    let Some(kind) = EventKind::from_avro_name(&name) else {
        return unreadable(DecodeError::UnknownType(name));
    };
    let reader = &shipped().current(kind).schema;
    match catch_unwind(|| SchemaCompatibility::can_read(&schema, reader)) {
        Ok(Ok(())) => Writer::Resolve(kind, Box::new(schema)),
        Ok(Err(e)) => unreadable(DecodeError::Incompatible { reader: kind.avro_name(), problem: e.to_string() }),
        Err(_) => unreadable(DecodeError::Incompatible {
            reader: kind.avro_name(),
            problem: "compatibility check failed".into(),
        }),
    }
}

fn read_with(writer: &Writer, datum: &[u8]) -> Result<Event, DecodeError> {
    match writer {
        Writer::Current(kind) => binary::decode(*kind, datum),
        Writer::Resolve(kind, schema) => resolve(*kind, schema, datum),
        Writer::Unreadable(e) => Err(clone_error(e)),
    }
}

/// Reads a datum written with `writer` into the current schema of `kind` via apache-avro.
fn resolve(kind: EventKind, writer: &Schema, datum: &[u8]) -> Result<Event, DecodeError> {
    let reader = &shipped().current(kind).schema;
    let mut rest = datum;
    let value = catch_unwind(AssertUnwindSafe(|| apache_avro::from_avro_datum(writer, &mut rest, Some(reader))))
        .map_err(|_| DecodeError::malformed("apache-avro panicked on this datum"))?
        .map_err(|e| DecodeError::malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::malformed(format!("{} trailing bytes after the record", rest.len())));
    }
    avro_value::from_value(kind, &value)
}

/// Cached unreadable-writer errors are re-issued per record (the originals are not `Clone`
/// because registry errors carry reqwest errors; cached ones never do).
fn clone_error(e: &DecodeError) -> DecodeError {
    match e {
        DecodeError::UnknownType(n) => DecodeError::UnknownType(n.clone()),
        DecodeError::Incompatible { reader, problem } => DecodeError::Incompatible { reader, problem: problem.clone() },
        other => DecodeError::Incompatible { reader: "any orderflow event", problem: other.to_string() },
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Codec>();
    }
}
