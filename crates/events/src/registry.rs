//! A minimal Confluent Schema Registry client: register a subject version
//! (`POST /subjects/{subject}/versions`) and fetch a schema by id (`GET /schemas/ids/{id}`).
//! Subjects follow TopicNameStrategy (`{topic}-value`). Both answers are cached for the life of
//! the client: ids are immutable in a registry. Requests time out; response bodies are capped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::error::RegistryError;

/// Connect timeout of every registry request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout of every registry request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest registry response body read.
const MAX_BODY: usize = 1 << 20;
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Cheap to clone; clones share the caches.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    http: reqwest::Client,
    /// subject → (schema text → id) of schemas this client registered.
    registered: RwLock<HashMap<(String, String), u32>>,
    /// id → schema text.
    by_id: RwLock<HashMap<u32, Arc<str>>>,
}

/// The subject of a topic's values under TopicNameStrategy.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

impl RegistryClient {
    /// `url` is the registry's base URL, e.g. `http://127.0.0.1:8081`.
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| RegistryError::BadUrl { url: url.to_owned(), problem: e.to_string() })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RegistryError::BadUrl { url: url.to_owned(), problem: "scheme must be http or https".into() });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| RegistryError::Unreachable { what: "building HTTP client".into(), source: e })?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                base: url.trim_end_matches('/').to_owned(),
                http,
                registered: RwLock::default(),
                by_id: RwLock::default(),
            }),
        })
    }

    /// Registers `schema` under `subject` (idempotent in the registry) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = self.registered_id(subject, schema) {
            return Ok(id);
        }
        let what = format!("registering a schema under subject {subject}");
        let url = format!("{}/subjects/{}/versions", self.inner.base, encode_path(subject));
        let body = serde_json::json!({ "schema": schema }).to_string();
        let req = self.inner.http.post(url).header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE).body(body);
        let v = self.call(&what, req).await?;
        let id = id_of(&what, &v)?;
        write(&self.inner.registered).insert(key, id);
        write(&self.inner.by_id).insert(id, Arc::from(schema));
        Ok(id)
    }

    /// The id of `schema` under `subject` if this client registered it already.
    pub fn registered_id(&self, subject: &str, schema: &str) -> Option<u32> {
        read(&self.inner.registered).get(&(subject.to_owned(), schema.to_owned())).copied()
    }

    /// The schema text of `id`, from the cache or the registry.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<str>, RegistryError> {
        if let Some(s) = self.cached_schema(id) {
            return Ok(s);
        }
        let what = format!("fetching schema id {id}");
        let req = self
            .inner
            .http
            .get(format!("{}/schemas/ids/{id}", self.inner.base))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        let v = self.call(&what, req).await?;
        let schema: Arc<str> = match v.get("schema") {
            Some(serde_json::Value::String(s)) => Arc::from(s.as_str()),
            _ => {
                return Err(RegistryError::BadResponse { what, problem: "no \"schema\" string".into() });
            }
        };
        if let Some(t) = v.get("schemaType").and_then(|t| t.as_str())
            && t != "AVRO"
        {
            return Err(RegistryError::BadResponse { what, problem: format!("schemaType {t}, not AVRO") });
        }
        write(&self.inner.by_id).insert(id, schema.clone());
        Ok(schema)
    }

    /// The schema text of `id` if cached (no I/O).
    pub fn cached_schema(&self, id: u32) -> Option<Arc<str>> {
        read(&self.inner.by_id).get(&id).cloned()
    }

    async fn call(&self, what: &str, req: reqwest::RequestBuilder) -> Result<serde_json::Value, RegistryError> {
        let unreachable = |e| RegistryError::Unreachable { what: what.to_owned(), source: e };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(RegistryError::BadResponse {
                    what: what.to_owned(),
                    problem: format!("body over {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound { what: what.to_owned() });
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).chars().take(500).collect();
            return Err(RegistryError::Status { what: what.to_owned(), status: status.as_u16(), body: text });
        }
        serde_json::from_slice(&body)
            .map_err(|e| RegistryError::BadResponse { what: what.to_owned(), problem: e.to_string() })
    }
}

fn id_of(what: &str, v: &serde_json::Value) -> Result<u32, RegistryError> {
    v.get("id").and_then(serde_json::Value::as_u64).and_then(|id| u32::try_from(id).ok()).ok_or_else(|| {
        RegistryError::BadResponse { what: what.to_owned(), problem: format!("no numeric \"id\" in {v}") }
    })
}

/// Percent-encodes a subject for a URL path segment.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// A poisoned lock only means another thread panicked mid-insert of a complete entry; the map
// is still consistent, so keep using it.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
