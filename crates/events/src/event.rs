//! The events themselves, as Rust types. Serde `Serialize`/`Deserialize` give their JSON shape
//! (used by `orderflow tail` and the JSONL publisher): the same field names as the ingress
//! request bodies, plus `type` (the CloudEvents type), `event_id` and RFC 3339 times.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    AddressLine, Channel, City, CountryCode, Currency, CustomerId, Email, Invalid, MinorUnits, Money, OrderId,
    PersonName, PostalCode, Quantity, Reason, Sku, StockDelta, WarehouseId, limits,
};

/// Topic of order events, keyed by `order_id`.
pub const ORDERS_TOPIC: &str = "orders.v1";
/// Topic of stock events, keyed by `sku`.
pub const INVENTORY_TOPIC: &str = "inventory.v1";
/// CloudEvents type of [`OrderPlaced`].
pub const ORDER_PLACED_TYPE: &str = "orderflow.order.placed.v1";
/// CloudEvents type of [`InventoryChanged`].
pub const INVENTORY_CHANGED_TYPE: &str = "orderflow.inventory.changed.v1";
/// Topic of the allocator's decisions, keyed by `order_id`.
pub const ALLOCATIONS_TOPIC: &str = "allocations.v1";
/// CloudEvents type of [`Event::OrderAllocated`].
pub const ORDER_ALLOCATED_TYPE: &str = "orderflow.order.allocated.v1";
/// CloudEvents type of [`Event::OrderBackordered`].
pub const ORDER_BACKORDERED_TYPE: &str = "orderflow.order.backordered.v1";
/// CloudEvents type of [`Event::BackorderAllocated`].
pub const BACKORDER_ALLOCATED_TYPE: &str = "orderflow.backorder.allocated.v1";

/// The buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: CustomerId,
    pub email: Email,
    pub name: PersonName,
}

/// One ordered item. `unit_price_minor` is in the order's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price_minor: MinorUnits,
}

/// A shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: AddressLine,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<AddressLine>,
    pub city: City,
    pub postal_code: PostalCode,
    pub country: CountryCode,
}

/// An order was placed. Invariants beyond the field types (checked by [`OrderPlaced::validate`],
/// which the codec runs on encode and decode): 1..=500 lines, and `total_minor` equals the sum of
/// `quantity * unit_price_minor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub event_id: Uuid,
    pub order_id: OrderId,
    pub customer: Customer,
    pub currency: Currency,
    pub lines: Vec<OrderLine>,
    pub total_minor: MinorUnits,
    pub shipping_address: Address,
    pub placed_at: DateTime<Utc>,
    pub channel: Channel,
}

impl OrderPlaced {
    /// The total as [`Money`].
    pub fn total(&self) -> Money {
        Money { minor: self.total_minor, currency: self.currency }
    }

    /// Sum of the lines, overflow-checked. Errors name the offending field.
    pub fn lines_sum(&self) -> Result<MinorUnits, (String, Invalid)> {
        let mut sum = MinorUnits::ZERO;
        for (i, l) in self.lines.iter().enumerate() {
            sum = l
                .unit_price_minor
                .checked_mul(l.quantity)
                .and_then(|line| sum.checked_add(line))
                .map_err(|e| (format!("lines[{i}]"), e))?;
        }
        Ok(sum)
    }

    /// Cross-field invariants; returns the field path and problem of the first violation.
    pub fn validate(&self) -> Result<(), (String, Invalid)> {
        if self.lines.is_empty() {
            return Err(("lines".into(), Invalid::new("must not be empty")));
        }
        if self.lines.len() > limits::ORDER_LINES {
            return Err(("lines".into(), Invalid::new(format!("must have at most {} entries", limits::ORDER_LINES))));
        }
        let sum = self.lines_sum()?;
        if sum != self.total_minor {
            return Err((
                "total_minor".into(),
                Invalid::new(format!("must equal the sum of the lines ({})", sum.get())),
            ));
        }
        Ok(())
    }
}

/// Stock of one sku in one warehouse changed. Invariant (checked by
/// [`InventoryChanged::validate`]): the sign of `delta` fits the `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryChanged {
    pub event_id: Uuid,
    pub sku: Sku,
    pub warehouse: WarehouseId,
    pub delta: StockDelta,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    pub occurred_at: DateTime<Utc>,
}

impl InventoryChanged {
    pub fn validate(&self) -> Result<(), (String, Invalid)> {
        self.reason.check_delta(self.delta).map_err(|e| ("delta".into(), e))
    }
}

/// `quantity` units of an order line's `sku`, taken from `warehouse`'s stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocatedLine {
    pub sku: Sku,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
}

/// Units of an order line's `sku` that no warehouse had: the order waits for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingLine {
    pub sku: Sku,
    pub quantity_missing: Quantity,
}

/// The allocator reserved stock for an order: [`Event::OrderAllocated`] when the order is
/// first decided, [`Event::BackorderAllocated`] when stock that arrived later covers what it
/// was missing. Invariant: 1..=500 lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub event_id: Uuid,
    pub order_id: OrderId,
    /// The event that led to the decision: the order, or the stock change that covered it.
    pub caused_by: Uuid,
    pub lines: Vec<AllocatedLine>,
    pub decided_at: DateTime<Utc>,
}

/// The allocator could not cover part of an order: those units are backordered, queued by
/// the order's placement time. Invariant: 1..=5000 lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backorder {
    pub event_id: Uuid,
    pub order_id: OrderId,
    /// The order event that was decided.
    pub caused_by: Uuid,
    pub lines: Vec<MissingLine>,
    pub decided_at: DateTime<Utc>,
}

fn check_decision_lines(n: usize) -> Result<(), (String, Invalid)> {
    if n == 0 {
        return Err(("lines".into(), Invalid::new("must not be empty")));
    }
    if n > limits::DECISION_LINES {
        return Err(("lines".into(), Invalid::new(format!("must have at most {} entries", limits::DECISION_LINES))));
    }
    Ok(())
}

/// Every event orderflow carries. JSON: internally tagged by `type` = the CloudEvents type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    #[serde(rename = "orderflow.order.placed.v1")]
    OrderPlaced(OrderPlaced),
    #[serde(rename = "orderflow.inventory.changed.v1")]
    InventoryChanged(InventoryChanged),
    #[serde(rename = "orderflow.order.allocated.v1")]
    OrderAllocated(Allocation),
    #[serde(rename = "orderflow.order.backordered.v1")]
    OrderBackordered(Backorder),
    #[serde(rename = "orderflow.backorder.allocated.v1")]
    BackorderAllocated(Allocation),
}

/// Which event, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    OrderPlaced,
    InventoryChanged,
    OrderAllocated,
    OrderBackordered,
    BackorderAllocated,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::OrderPlaced,
        EventKind::InventoryChanged,
        EventKind::OrderAllocated,
        EventKind::OrderBackordered,
        EventKind::BackorderAllocated,
    ];

    pub fn ce_type(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => ORDER_PLACED_TYPE,
            EventKind::InventoryChanged => INVENTORY_CHANGED_TYPE,
            EventKind::OrderAllocated => ORDER_ALLOCATED_TYPE,
            EventKind::OrderBackordered => ORDER_BACKORDERED_TYPE,
            EventKind::BackorderAllocated => BACKORDER_ALLOCATED_TYPE,
        }
    }
    pub fn topic(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => ORDERS_TOPIC,
            EventKind::InventoryChanged => INVENTORY_TOPIC,
            EventKind::OrderAllocated | EventKind::OrderBackordered | EventKind::BackorderAllocated => {
                ALLOCATIONS_TOPIC
            }
        }
    }
    /// Avro full name of the record.
    pub fn avro_name(self) -> &'static str {
        match self {
            EventKind::OrderPlaced => "orderflow.events.OrderPlaced",
            EventKind::InventoryChanged => "orderflow.events.InventoryChanged",
            EventKind::OrderAllocated => "orderflow.events.OrderAllocated",
            EventKind::OrderBackordered => "orderflow.events.OrderBackordered",
            EventKind::BackorderAllocated => "orderflow.events.BackorderAllocated",
        }
    }
    pub fn from_avro_name(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.avro_name() == name)
    }
    pub fn from_ce_type(ce_type: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.ce_type() == ce_type)
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::OrderPlaced(_) => EventKind::OrderPlaced,
            Event::InventoryChanged(_) => EventKind::InventoryChanged,
            Event::OrderAllocated(_) => EventKind::OrderAllocated,
            Event::OrderBackordered(_) => EventKind::OrderBackordered,
            Event::BackorderAllocated(_) => EventKind::BackorderAllocated,
        }
    }
    pub fn event_id(&self) -> Uuid {
        match self {
            Event::OrderPlaced(e) => e.event_id,
            Event::InventoryChanged(e) => e.event_id,
            Event::OrderAllocated(e) | Event::BackorderAllocated(e) => e.event_id,
            Event::OrderBackordered(e) => e.event_id,
        }
    }
    /// CloudEvents type, e.g. `orderflow.order.placed.v1`.
    pub fn ce_type(&self) -> &'static str {
        self.kind().ce_type()
    }
    /// Kafka topic: `orders.v1`, `inventory.v1` or `allocations.v1`.
    pub fn topic(&self) -> &'static str {
        self.kind().topic()
    }
    /// Kafka key: the aggregate id (`order_id`, or `sku` for stock changes).
    pub fn key(&self) -> &str {
        match self {
            Event::OrderPlaced(e) => e.order_id.as_str(),
            Event::InventoryChanged(e) => e.sku.as_str(),
            Event::OrderAllocated(e) | Event::BackorderAllocated(e) => e.order_id.as_str(),
            Event::OrderBackordered(e) => e.order_id.as_str(),
        }
    }
    pub fn order_id(&self) -> Option<&OrderId> {
        match self {
            Event::OrderPlaced(e) => Some(&e.order_id),
            Event::InventoryChanged(e) => e.order_id.as_ref(),
            Event::OrderAllocated(e) | Event::BackorderAllocated(e) => Some(&e.order_id),
            Event::OrderBackordered(e) => Some(&e.order_id),
        }
    }
    /// When the fact happened (`placed_at` / `occurred_at` / `decided_at`); also the `ce_time`
    /// header.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Event::OrderPlaced(e) => e.placed_at,
            Event::InventoryChanged(e) => e.occurred_at,
            Event::OrderAllocated(e) | Event::BackorderAllocated(e) => e.decided_at,
            Event::OrderBackordered(e) => e.decided_at,
        }
    }
    /// The fact's natural key, for events that describe a fact that happens once: an order is
    /// placed once. A stock change has none: two equal changes are two movements. The
    /// allocator's decisions carry deterministic event ids instead (docs/allocation.md).
    pub fn natural_key(&self) -> Option<NaturalKey> {
        match self {
            Event::OrderPlaced(e) => Some(e.natural_key()),
            _ => None,
        }
    }
    /// Cross-field invariants of the inner event.
    pub fn validate(&self) -> Result<(), (String, Invalid)> {
        match self {
            Event::OrderPlaced(e) => e.validate(),
            Event::InventoryChanged(e) => e.validate(),
            Event::OrderAllocated(e) | Event::BackorderAllocated(e) => check_decision_lines(e.lines.len()),
            Event::OrderBackordered(e) => check_decision_lines(e.lines.len()),
        }
    }
}

/// The identity of a fact that happens once, whatever event id it travels under
/// (docs/events.md, "Natural keys"). Two events with the same `kind` and `key` describe the
/// same fact: consumers apply the first one, skip a repeat whose `fingerprint` matches, and
/// dead-letter one whose fingerprint differs (a conflicting second version of the fact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaturalKey {
    /// What kind of fact, e.g. `order_placed`; keys of different kinds never meet.
    pub kind: &'static str,
    /// The fact's id within its kind, e.g. the order id.
    pub key: String,
    /// SHA-256 of the fact's content, without what a retry may change (the event id, the
    /// time). Stored by consumers: its input's layout must not change within a kind.
    pub fingerprint: Vec<u8>,
}

/// What an order's identity covers: everything but the event id and `placed_at` (a checkout
/// retrying without an `Idempotency-Key` sends the same order with a later time).
#[derive(Serialize)]
struct OrderContent<'a> {
    customer: &'a Customer,
    currency: &'a Currency,
    lines: &'a [OrderLine],
    total_minor: &'a MinorUnits,
    shipping_address: &'a Address,
    channel: &'a Channel,
}

impl OrderPlaced {
    /// Kind of [`NaturalKey`] an order carries.
    pub const NATURAL_KEY_KIND: &'static str = "order_placed";

    /// The order's natural key: its order id, fingerprinted by customer, currency, lines,
    /// total, shipping address and channel.
    pub fn natural_key(&self) -> NaturalKey {
        use sha2::Digest as _;
        let content = OrderContent {
            customer: &self.customer,
            currency: &self.currency,
            lines: &self.lines,
            total_minor: &self.total_minor,
            shipping_address: &self.shipping_address,
            channel: &self.channel,
        };
        // Serializing plain data structs to JSON cannot fail.
        let json = serde_json::to_vec(&content).unwrap_or_default();
        NaturalKey {
            kind: Self::NATURAL_KEY_KIND,
            key: self.order_id.as_str().to_owned(),
            fingerprint: sha2::Sha256::digest(&json).to_vec(),
        }
    }
}

impl From<OrderPlaced> for Event {
    fn from(e: OrderPlaced) -> Self {
        Event::OrderPlaced(e)
    }
}
impl From<InventoryChanged> for Event {
    fn from(e: InventoryChanged) -> Self {
        Event::InventoryChanged(e)
    }
}

/// Namespace of the deterministic event ids (UUID v5) derived from an `Idempotency-Key`.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_7700_0000_0000_0001);

/// Deterministic event id for a client's idempotency key: the same key (and index within a
/// batch) always gives the same id, so a retried request is applied once. `scope` should name
/// the caller (e.g. the token's principal) so two clients' keys never collide.
pub fn idempotent_event_id(scope: &str, idempotency_key: &str, index: usize) -> Uuid {
    let name = format!("{}\u{0}{}\u{0}{}", scope, idempotency_key, index);
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    #[test]
    fn a_repeat_of_an_order_under_another_event_id_and_time_has_the_same_natural_key() {
        let first = samples::order_placed();
        let mut repeat = first.clone();
        repeat.event_id = Uuid::new_v4();
        repeat.placed_at += chrono::Duration::seconds(30);
        assert_eq!(first.natural_key(), repeat.natural_key());
        assert_eq!(first.natural_key().kind, "order_placed");
        assert_eq!(first.natural_key().key, first.order_id.as_str());
        assert_eq!(first.natural_key().fingerprint.len(), 32);
    }

    #[test]
    fn an_order_with_other_content_under_the_same_id_has_another_fingerprint() {
        let first = samples::order_placed();
        let mut other = first.clone();
        other.lines[0].quantity = Quantity::parse(i64::from(other.lines[0].quantity.get()) + 1).unwrap();
        other.total_minor = other.lines_sum().unwrap();
        assert_eq!(first.natural_key().key, other.natural_key().key);
        assert_ne!(first.natural_key().fingerprint, other.natural_key().fingerprint);
        let mut moved = first.clone();
        moved.shipping_address.city = City::parse("Elsewhere").unwrap();
        assert_ne!(first.natural_key().fingerprint, moved.natural_key().fingerprint);
    }

    #[test]
    fn decisions_go_to_allocations_keyed_by_order_and_need_a_line() {
        let allocated = Event::OrderAllocated(samples::order_allocated());
        let backordered = Event::OrderBackordered(samples::order_backordered());
        let later = Event::BackorderAllocated(samples::backorder_allocated());
        for e in [&allocated, &backordered, &later] {
            assert_eq!(e.topic(), ALLOCATIONS_TOPIC);
            assert_eq!(e.key(), "ord-2026-000042");
            assert_eq!(e.natural_key(), None);
            assert!(e.validate().is_ok());
        }
        assert_eq!(later.ce_type(), "orderflow.backorder.allocated.v1");
        let mut empty = samples::order_allocated();
        empty.lines.clear();
        assert_eq!(Event::OrderAllocated(empty).validate().unwrap_err().0, "lines");
        let mut empty = samples::order_backordered();
        empty.lines.clear();
        assert_eq!(Event::OrderBackordered(empty).validate().unwrap_err().0, "lines");
    }

    #[test]
    fn stock_changes_have_no_natural_key() {
        assert_eq!(Event::from(samples::inventory_changed()).natural_key(), None);
        assert!(Event::from(samples::order_placed()).natural_key().is_some());
    }
}
