//! orderflow's event contracts: what travels on `orders.v1` and `inventory.v1`.
//!
//! # Owns
//! * the Avro schemas (`schemas/*.avsc`, embedded) and their fingerprints ([`schema`]);
//! * the event types [`OrderPlaced`], [`InventoryChanged`], [`Event`], their topics, keys and
//!   JSON shape ([`event`]), built from validating domain newtypes ([`domain`]);
//! * the ingress request bodies and their validation into events ([`request`]);
//! * the value codec, both framings (single-object and Confluent), writer→reader resolution
//!   ([`Codec`]) and the Schema Registry client it uses ([`registry`]);
//! * the CloudEvents binary-mode headers and W3C `traceparent` ([`headers`]).
//!
//! # Must not touch
//! Kafka clients (no rdkafka: headers are plain `(name, bytes)` pairs), databases (no sqlx),
//! HTTP servers, configuration loading and telemetry setup. Those live in the runtime,
//! ingress and CLI crates, which call this one.
//!
//! # Layout
//! `domain` (newtypes) → `event` (events) → `request` (ingress DTOs) ;
//! `schema` (shipped schemas) → `binary` (direct codec for the current schemas) +
//! `avro_value` (apache-avro values for other writer versions) → `codec` ;
//! `registry`, `headers`, `error` beside them.

pub mod avro_value;
mod binary;
pub mod codec;
pub mod contract;
pub mod domain;
pub mod error;
pub mod event;
pub mod headers;
mod iso;
pub mod openapi;
pub mod registry;
pub mod request;
pub mod samples;
pub mod schema;

pub use codec::Codec;
pub use domain::{
    AddressLine, Channel, City, CountryCode, Currency, CustomerId, Email, Invalid, MinorUnits, Money, OrderId,
    PersonName, PostalCode, Quantity, Reason, Sku, StockDelta, WarehouseId,
};
pub use error::{DecodeError, EncodeError, HeaderError, RegistryError};
pub use event::{
    ALLOCATIONS_TOPIC, Address, AllocatedLine, Allocation, BACKORDER_ALLOCATED_TYPE, Backorder, Customer,
    EVENT_ID_NAMESPACE, Event, EventKind, INVENTORY_CHANGED_TYPE, INVENTORY_TOPIC, InventoryChanged, MissingLine,
    NaturalKey, ORDER_ALLOCATED_TYPE, ORDER_BACKORDERED_TYPE, ORDER_PLACED_TYPE, ORDERS_TOPIC, OrderLine, OrderPlaced,
    idempotent_event_id,
};
pub use headers::{CeHeaders, TraceParent};
pub use registry::RegistryClient;
pub use request::{FieldError, InventoryChangeRequest, InventoryChangesRequest, OrderRequest};
