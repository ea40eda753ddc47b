//! Conversion between events and apache-avro `Value`s of the current schemas. Used for writer
//! schemas other than the current one (apache-avro resolves writer → reader, then this turns
//! the reader-shaped value into an event), and by tests to cross-check [`crate::binary`].

use apache_avro::types::Value;

use crate::binary::{field, parse_uuid};
use crate::domain::{
    AddressLine, Channel, City, CountryCode, Currency, CustomerId, Email, MinorUnits, OrderId, PersonName, PostalCode,
    Quantity, Reason, Sku, StockDelta, WarehouseId, limits, micros_to_time,
};
use crate::error::DecodeError;
use crate::event::{
    Address, AllocatedLine, Allocation, Backorder, Customer, Event, EventKind, InventoryChanged, MissingLine,
    OrderLine, OrderPlaced,
};

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn opt(v: Option<&str>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(s(x))),
    }
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The event as a `Value` of its current schema.
pub fn to_value(event: &Event) -> Value {
    match event {
        Event::OrderPlaced(e) => record(vec![
            ("event_id", Value::Uuid(e.event_id)),
            ("order_id", s(e.order_id.as_str())),
            (
                "customer",
                record(vec![
                    ("id", s(e.customer.id.as_str())),
                    ("email", s(e.customer.email.as_str())),
                    ("name", s(e.customer.name.as_str())),
                ]),
            ),
            ("currency", s(e.currency.as_str())),
            (
                "lines",
                Value::Array(
                    e.lines
                        .iter()
                        .map(|l| {
                            record(vec![
                                ("sku", s(l.sku.as_str())),
                                ("quantity", Value::Int(l.quantity.get() as i32)),
                                ("unit_price_minor", Value::Long(l.unit_price_minor.get())),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("total_minor", Value::Long(e.total_minor.get())),
            (
                "shipping_address",
                record(vec![
                    ("line1", s(e.shipping_address.line1.as_str())),
                    ("line2", opt(e.shipping_address.line2.as_ref().map(AddressLine::as_str))),
                    ("city", s(e.shipping_address.city.as_str())),
                    ("postal_code", s(e.shipping_address.postal_code.as_str())),
                    ("country", s(e.shipping_address.country.as_str())),
                ]),
            ),
            ("placed_at", Value::TimestampMicros(e.placed_at.timestamp_micros())),
            ("channel", s(e.channel.as_str())),
        ]),
        Event::InventoryChanged(e) => record(vec![
            ("event_id", Value::Uuid(e.event_id)),
            ("sku", s(e.sku.as_str())),
            ("warehouse", s(e.warehouse.as_str())),
            ("delta", Value::Long(e.delta.get())),
            ("reason", Value::Enum(e.reason.index() as u32, e.reason.as_str().to_owned())),
            ("order_id", opt(e.order_id.as_ref().map(OrderId::as_str))),
            ("occurred_at", Value::TimestampMicros(e.occurred_at.timestamp_micros())),
        ]),
        Event::OrderAllocated(e) | Event::BackorderAllocated(e) => decision(
            e.event_id,
            &e.order_id,
            e.caused_by,
            e.lines
                .iter()
                .map(|l| {
                    record(vec![
                        ("sku", s(l.sku.as_str())),
                        ("warehouse", s(l.warehouse.as_str())),
                        ("quantity", Value::Int(l.quantity.get() as i32)),
                    ])
                })
                .collect(),
            &e.decided_at,
        ),
        Event::OrderBackordered(e) => decision(
            e.event_id,
            &e.order_id,
            e.caused_by,
            e.lines
                .iter()
                .map(|l| {
                    record(vec![
                        ("sku", s(l.sku.as_str())),
                        ("quantity_missing", Value::Int(l.quantity_missing.get() as i32)),
                    ])
                })
                .collect(),
            &e.decided_at,
        ),
    }
}

fn decision(
    event_id: uuid::Uuid,
    order_id: &OrderId,
    caused_by: uuid::Uuid,
    lines: Vec<Value>,
    decided_at: &chrono::DateTime<chrono::Utc>,
) -> Value {
    record(vec![
        ("event_id", Value::Uuid(event_id)),
        ("order_id", s(order_id.as_str())),
        ("caused_by", Value::Uuid(caused_by)),
        ("lines", Value::Array(lines)),
        ("decided_at", Value::TimestampMicros(decided_at.timestamp_micros())),
    ])
}

/// The `lines` array of a decision, each item a record read by `item`.
fn decision_lines<T>(r: &Rec<'_>, item: impl Fn(&Rec<'_>) -> Result<T, DecodeError>) -> Result<Vec<T>, DecodeError> {
    let Value::Array(items) = r.get("lines")? else {
        return Err(DecodeError::malformed("lines: expected an array"));
    };
    if items.len() > limits::DECISION_LINES {
        return Err(DecodeError::Invalid {
            field: "lines".into(),
            problem: format!("must have at most {} entries", limits::DECISION_LINES),
        });
    }
    items.iter().enumerate().map(|(i, v)| item(&Rec::new(&format!("lines[{i}]"), v)?)).collect()
}

fn allocation(r: &Rec<'_>, event_id: uuid::Uuid) -> Result<Allocation, DecodeError> {
    Ok(Allocation {
        event_id,
        order_id: r.parse("order_id", OrderId::parse)?,
        caused_by: parse_uuid("caused_by", &r.str("caused_by")?)?,
        lines: decision_lines(r, |l| {
            Ok(AllocatedLine {
                sku: l.parse("sku", Sku::parse)?,
                warehouse: l.parse("warehouse", WarehouseId::parse)?,
                quantity: field(&l.name("quantity"), Quantity::parse(l.long("quantity")?))?,
            })
        })?,
        decided_at: field("decided_at", micros_to_time(r.long("decided_at")?))?,
    })
}

/// Field access on a reader-shaped record.
struct Rec<'a> {
    path: String,
    fields: &'a [(String, Value)],
}

impl<'a> Rec<'a> {
    fn new(path: &str, v: &'a Value) -> Result<Self, DecodeError> {
        match v {
            Value::Record(fields) => Ok(Rec { path: path.to_owned(), fields }),
            other => Err(DecodeError::malformed(format!("{path}: expected a record, got {other:?}"))),
        }
    }
    fn name(&self, f: &str) -> String {
        if self.path.is_empty() { f.to_owned() } else { format!("{}.{f}", self.path) }
    }
    fn get(&self, f: &str) -> Result<&'a Value, DecodeError> {
        let v = self
            .fields
            .iter()
            .find(|(k, _)| k == f)
            .map(|(_, v)| v)
            .ok_or_else(|| DecodeError::malformed(format!("{}: missing", self.name(f))))?;
        Ok(match v {
            Value::Union(_, inner) => inner,
            v => v,
        })
    }
    fn str(&self, f: &str) -> Result<String, DecodeError> {
        match self.get(f)? {
            Value::String(s) => Ok(s.clone()),
            Value::Uuid(u) => Ok(u.to_string()),
            Value::Enum(_, s) => Ok(s.clone()),
            other => Err(DecodeError::malformed(format!("{}: expected a string, got {other:?}", self.name(f)))),
        }
    }
    fn opt_str(&self, f: &str) -> Result<Option<String>, DecodeError> {
        match self.get(f)? {
            Value::Null => Ok(None),
            _ => self.str(f).map(Some),
        }
    }
    fn long(&self, f: &str) -> Result<i64, DecodeError> {
        match self.get(f)? {
            Value::Long(n) | Value::TimestampMicros(n) | Value::LocalTimestampMicros(n) => Ok(*n),
            Value::Int(n) => Ok(i64::from(*n)),
            other => Err(DecodeError::malformed(format!("{}: expected a long, got {other:?}", self.name(f)))),
        }
    }
    fn parse<T>(&self, f: &str, p: impl FnOnce(String) -> Result<T, crate::domain::Invalid>) -> Result<T, DecodeError> {
        let v = self.str(f)?;
        field(&self.name(f), p(v))
    }
}

/// Builds and validates an event from a `Value` already resolved to the current schema of `kind`.
pub fn from_value(kind: EventKind, v: &Value) -> Result<Event, DecodeError> {
    let r = Rec::new("", v)?;
    let event_id = parse_uuid("event_id", &r.str("event_id")?)?;
    let event = match kind {
        EventKind::OrderPlaced => {
            let c = Rec::new("customer", r.get("customer")?)?;
            let a = Rec::new("shipping_address", r.get("shipping_address")?)?;
            let Value::Array(items) = r.get("lines")? else {
                return Err(DecodeError::malformed("lines: expected an array"));
            };
            if items.len() > limits::ORDER_LINES {
                return Err(DecodeError::Invalid {
                    field: "lines".into(),
                    problem: format!("must have at most {} entries", limits::ORDER_LINES),
                });
            }
            let lines = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let l = Rec::new(&format!("lines[{i}]"), item)?;
                    Ok(OrderLine {
                        sku: l.parse("sku", Sku::parse)?,
                        quantity: field(&l.name("quantity"), Quantity::parse(l.long("quantity")?))?,
                        unit_price_minor: field(
                            &l.name("unit_price_minor"),
                            MinorUnits::parse(l.long("unit_price_minor")?),
                        )?,
                    })
                })
                .collect::<Result<Vec<_>, DecodeError>>()?;
            Event::OrderPlaced(OrderPlaced {
                event_id,
                order_id: r.parse("order_id", OrderId::parse)?,
                customer: Customer {
                    id: c.parse("id", CustomerId::parse)?,
                    email: c.parse("email", Email::parse)?,
                    name: c.parse("name", PersonName::parse)?,
                },
                currency: r.parse("currency", |s| Currency::parse(&s))?,
                lines,
                total_minor: field("total_minor", MinorUnits::parse(r.long("total_minor")?))?,
                shipping_address: Address {
                    line1: a.parse("line1", AddressLine::parse)?,
                    line2: a
                        .opt_str("line2")?
                        .map(|s| field("shipping_address.line2", AddressLine::parse(s)))
                        .transpose()?,
                    city: a.parse("city", City::parse)?,
                    postal_code: a.parse("postal_code", PostalCode::parse)?,
                    country: a.parse("country", |s| CountryCode::parse(&s))?,
                },
                placed_at: field("placed_at", micros_to_time(r.long("placed_at")?))?,
                channel: r.parse("channel", Channel::parse)?,
            })
        }
        EventKind::InventoryChanged => {
            let reason = r.str("reason")?;
            Event::InventoryChanged(InventoryChanged {
                event_id,
                sku: r.parse("sku", Sku::parse)?,
                warehouse: r.parse("warehouse", WarehouseId::parse)?,
                delta: field("delta", StockDelta::parse(r.long("delta")?))?,
                reason: Reason::from_symbol(&reason).ok_or_else(|| DecodeError::Invalid {
                    field: "reason".into(),
                    problem: format!("unknown symbol {reason}"),
                })?,
                order_id: r.opt_str("order_id")?.map(|s| field("order_id", OrderId::parse(s))).transpose()?,
                occurred_at: field("occurred_at", micros_to_time(r.long("occurred_at")?))?,
            })
        }
        EventKind::OrderAllocated => Event::OrderAllocated(allocation(&r, event_id)?),
        EventKind::BackorderAllocated => Event::BackorderAllocated(allocation(&r, event_id)?),
        EventKind::OrderBackordered => Event::OrderBackordered(Backorder {
            event_id,
            order_id: r.parse("order_id", OrderId::parse)?,
            caused_by: parse_uuid("caused_by", &r.str("caused_by")?)?,
            lines: decision_lines(&r, |l| {
                Ok(MissingLine {
                    sku: l.parse("sku", Sku::parse)?,
                    quantity_missing: field(&l.name("quantity_missing"), Quantity::parse(l.long("quantity_missing")?))?,
                })
            })?,
            decided_at: field("decided_at", micros_to_time(r.long("decided_at")?))?,
        }),
    };
    event.validate().map_err(|(f, e)| DecodeError::Invalid { field: f, problem: e.0 })?;
    Ok(event)
}
