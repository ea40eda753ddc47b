//! The consumer contract inventory: every field of every event type as a typed value
//! ([`Field`]), so that each consumer can declare the fields it reads (its `Spec::reads`) with
//! the compiler checking the names, `orderflow contracts` can print who reads what, and
//! `orderflow contracts check --schema NEW.avsc` can refuse a schema that removes or changes a
//! field someone reads.
//!
//! A field is a leaf of the event's Avro record, named by its path: `customer.email`,
//! `lines[].sku` (a field of every element of the `lines` array). The tests below hold the list
//! to the shipped schemas: every leaf has a [`Field`], and every [`Field`] is a leaf.

use std::fmt;

use apache_avro::Schema;
use serde::Serialize;

use crate::EventKind;

/// Declares one event type's fields: the enum, its paths, and the list of all of them.
macro_rules! fields {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $path:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The field's path in the Avro record (`lines[].sku`).
            pub fn path(self) -> &'static str {
                match self { $($name::$variant => $path,)* }
            }
        }
    };
}

fields!(
    /// A field of `OrderPlaced` (`orders.v1`).
    OrderPlacedField {
        EventId => "event_id",
        OrderId => "order_id",
        CustomerId => "customer.id",
        CustomerEmail => "customer.email",
        CustomerName => "customer.name",
        Currency => "currency",
        LineSku => "lines[].sku",
        LineQuantity => "lines[].quantity",
        LineUnitPriceMinor => "lines[].unit_price_minor",
        TotalMinor => "total_minor",
        ShippingLine1 => "shipping_address.line1",
        ShippingLine2 => "shipping_address.line2",
        ShippingCity => "shipping_address.city",
        ShippingPostalCode => "shipping_address.postal_code",
        ShippingCountry => "shipping_address.country",
        PlacedAt => "placed_at",
        Channel => "channel",
    }
);

fields!(
    /// A field of `InventoryChanged` (`inventory.v1`).
    InventoryChangedField {
        EventId => "event_id",
        Sku => "sku",
        Warehouse => "warehouse",
        Delta => "delta",
        Reason => "reason",
        OrderId => "order_id",
        OccurredAt => "occurred_at",
    }
);

fields!(
    /// A field of `OrderAllocated` and `BackorderAllocated` (`allocations.v1`).
    AllocationField {
        EventId => "event_id",
        OrderId => "order_id",
        CausedBy => "caused_by",
        LineSku => "lines[].sku",
        LineWarehouse => "lines[].warehouse",
        LineQuantity => "lines[].quantity",
        DecidedAt => "decided_at",
    }
);

fields!(
    /// A field of `OrderBackordered` (`allocations.v1`).
    BackorderField {
        EventId => "event_id",
        OrderId => "order_id",
        CausedBy => "caused_by",
        LineSku => "lines[].sku",
        LineQuantityMissing => "lines[].quantity_missing",
        DecidedAt => "decided_at",
    }
);

/// One field of one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    OrderPlaced(OrderPlacedField),
    InventoryChanged(InventoryChangedField),
    OrderAllocated(AllocationField),
    OrderBackordered(BackorderField),
    BackorderAllocated(AllocationField),
}

impl Field {
    /// Every field of every event type, in schema order.
    pub fn all() -> Vec<Field> {
        let mut all: Vec<Field> = OrderPlacedField::ALL.iter().map(|f| Field::OrderPlaced(*f)).collect();
        all.extend(InventoryChangedField::ALL.iter().map(|f| Field::InventoryChanged(*f)));
        all.extend(AllocationField::ALL.iter().map(|f| Field::OrderAllocated(*f)));
        all.extend(BackorderField::ALL.iter().map(|f| Field::OrderBackordered(*f)));
        all.extend(AllocationField::ALL.iter().map(|f| Field::BackorderAllocated(*f)));
        all
    }

    /// The event type it belongs to.
    pub fn kind(self) -> EventKind {
        match self {
            Field::OrderPlaced(_) => EventKind::OrderPlaced,
            Field::InventoryChanged(_) => EventKind::InventoryChanged,
            Field::OrderAllocated(_) => EventKind::OrderAllocated,
            Field::OrderBackordered(_) => EventKind::OrderBackordered,
            Field::BackorderAllocated(_) => EventKind::BackorderAllocated,
        }
    }

    /// Its path in the event's record.
    pub fn path(self) -> &'static str {
        match self {
            Field::OrderPlaced(f) => f.path(),
            Field::InventoryChanged(f) => f.path(),
            Field::OrderAllocated(f) | Field::BackorderAllocated(f) => f.path(),
            Field::OrderBackordered(f) => f.path(),
        }
    }

    /// The Avro record's name (`OrderPlaced`).
    pub fn record(self) -> &'static str {
        record_name(self.kind())
    }

    /// The field's schema in this build's current schema of its event type (its canonical
    /// form), or `None` if the path does not lead to a leaf there.
    pub fn schema_in(self, record: &Schema) -> Option<Schema> {
        leaf(record, self.path())
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.record(), self.path())
    }
}

impl Serialize for Field {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The Avro record name of an event type.
pub fn record_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::OrderPlaced => "OrderPlaced",
        EventKind::InventoryChanged => "InventoryChanged",
        EventKind::OrderAllocated => "OrderAllocated",
        EventKind::OrderBackordered => "OrderBackordered",
        EventKind::BackorderAllocated => "BackorderAllocated",
    }
}

/// What the consumer runtime reads of every event it hands a consumer, whatever the consumer
/// declares: the event id (its ledger); an order's id and every field of its content
/// fingerprint (the natural-key check, [`crate::OrderPlaced::natural_key`]: all but the event
/// id and `placed_at`); and what validation checks (a change's sign against its reason).
pub const RUNTIME_READS: &[Field] = &[
    Field::OrderPlaced(OrderPlacedField::EventId),
    Field::OrderPlaced(OrderPlacedField::OrderId),
    Field::OrderPlaced(OrderPlacedField::CustomerId),
    Field::OrderPlaced(OrderPlacedField::CustomerEmail),
    Field::OrderPlaced(OrderPlacedField::CustomerName),
    Field::OrderPlaced(OrderPlacedField::Currency),
    Field::OrderPlaced(OrderPlacedField::LineSku),
    Field::OrderPlaced(OrderPlacedField::LineQuantity),
    Field::OrderPlaced(OrderPlacedField::LineUnitPriceMinor),
    Field::OrderPlaced(OrderPlacedField::TotalMinor),
    Field::OrderPlaced(OrderPlacedField::ShippingLine1),
    Field::OrderPlaced(OrderPlacedField::ShippingLine2),
    Field::OrderPlaced(OrderPlacedField::ShippingCity),
    Field::OrderPlaced(OrderPlacedField::ShippingPostalCode),
    Field::OrderPlaced(OrderPlacedField::ShippingCountry),
    Field::OrderPlaced(OrderPlacedField::Channel),
    Field::InventoryChanged(InventoryChangedField::EventId),
    Field::InventoryChanged(InventoryChangedField::Delta),
    Field::InventoryChanged(InventoryChangedField::Reason),
    Field::OrderAllocated(AllocationField::EventId),
    Field::OrderBackordered(BackorderField::EventId),
    Field::BackorderAllocated(AllocationField::EventId),
];

#[cfg(test)]
#[test]
fn the_runtime_reads_every_field_of_an_orders_fingerprint() {
    // Changing a field outside the list must leave the natural key alone; changing one in it
    // must not (for the order's content fields).
    let order = crate::samples::order_placed();
    let key = order.natural_key();
    let mut later = order.clone();
    later.placed_at += chrono::TimeDelta::hours(1);
    later.event_id = uuid::Uuid::new_v4();
    assert_eq!(later.natural_key(), key, "placed_at and event_id are not in the fingerprint");
    let mut channel = order.clone();
    channel.channel = crate::Channel::parse("app").unwrap();
    assert_ne!(channel.natural_key(), key);
    assert!(RUNTIME_READS.contains(&Field::OrderPlaced(OrderPlacedField::Channel)));
    assert!(!RUNTIME_READS.contains(&Field::OrderPlaced(OrderPlacedField::PlacedAt)));
}

/// The schema at `path` (`a.b`, `lines[].sku`) in `schema`: record fields by name, `[]` into
/// an array's items, through `["null", T]` unions; `None` when it is missing or not a leaf.
pub fn leaf(schema: &Schema, path: &str) -> Option<Schema> {
    let mut current = schema.clone();
    for step in path.split('.') {
        let (name, into_array) = match step.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (step, false),
        };
        let record = match unwrap_optional(&current) {
            Schema::Record(record) => record,
            _ => return None,
        };
        let field = record.fields.iter().find(|f| f.name == name)?;
        current = field.schema.clone();
        if into_array {
            current = match unwrap_optional(&current) {
                Schema::Array(array) => (*array.items).clone(),
                _ => return None,
            };
        }
    }
    match unwrap_optional(&current) {
        Schema::Record(_) | Schema::Array(_) => None,
        _ => Some(current),
    }
}

fn unwrap_optional(schema: &Schema) -> Schema {
    match schema {
        Schema::Union(union) => {
            let variants: Vec<&Schema> = union.variants().iter().filter(|s| !matches!(s, Schema::Null)).collect();
            match variants.as_slice() {
                [only] => (*only).clone(),
                _ => schema.clone(),
            }
        }
        _ => schema.clone(),
    }
}

/// Every leaf path of `record` (`lines[].sku`), in schema order.
pub fn leaves(record: &Schema) -> Vec<String> {
    fn walk(schema: &Schema, prefix: &str, out: &mut Vec<String>) {
        match unwrap_optional(schema) {
            Schema::Record(record) => {
                for field in &record.fields {
                    let path = if prefix.is_empty() { field.name.clone() } else { format!("{prefix}.{}", field.name) };
                    walk(&field.schema, &path, out);
                }
            }
            Schema::Array(array) => walk(&array.items, &format!("{prefix}[]"), out),
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk(record, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::shipped;

    #[test]
    fn every_field_is_a_leaf_of_the_current_schema_and_every_leaf_is_a_field() {
        for kind in EventKind::ALL {
            let schema = &shipped().current(kind).schema;
            let declared: Vec<&str> = Field::all().into_iter().filter(|f| f.kind() == kind).map(Field::path).collect();
            assert_eq!(leaves(schema), declared, "{kind:?}");
            for path in declared {
                assert!(leaf(schema, path).is_some(), "{kind:?} {path}");
            }
        }
    }

    #[test]
    fn a_path_into_an_optional_field_or_an_array_finds_its_leaf() {
        let order = &shipped().current(EventKind::OrderPlaced).schema;
        assert!(matches!(leaf(order, "lines[].quantity"), Some(Schema::Long | Schema::Int)));
        assert!(leaf(order, "shipping_address.line2").is_some());
        assert!(leaf(order, "lines").is_none() && leaf(order, "customer").is_none() && leaf(order, "nope").is_none());
        assert_eq!(Field::OrderPlaced(OrderPlacedField::CustomerEmail).to_string(), "OrderPlaced.customer.email");
    }
}
