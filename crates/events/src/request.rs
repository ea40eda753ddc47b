//! Ingress request bodies (`POST /v1/orders`, `POST /v1/inventory/changes`, docs/producing.md) and
//! their validation into events. Validation collects *every* problem, each naming its field
//! path (`lines[1].quantity`), for the ingress's 422 body and the JSONL publisher's report.
//!
//! Required fields are `Option`s in the DTOs so a missing one is reported with the others
//! instead of failing deserialization alone. Unknown fields are rejected
//! (`deny_unknown_fields`): a misspelt optional field (`placedAt`) must not be silently ignored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    AddressLine, Channel, City, CountryCode, Currency, CustomerId, Email, Invalid, MinorUnits, OrderId, PersonName,
    PostalCode, Quantity, Reason, Sku, StockDelta, WarehouseId, limits, parse_event_time,
};
use crate::event::{Address, Customer, InventoryChanged, OrderLine, OrderPlaced};

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path into the request body, e.g. `lines[1].quantity`.
    pub field: String,
    /// What is wrong, e.g. `must be at least 1`.
    pub problem: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// A JSON integer, also when written with a zero fraction (`3.0`): JSON Schema's `integer`
/// allows it, and Python's `json` writes whole floats that way.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    /// 2^53: beyond it a float no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    if let Some(n) = number.as_i64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => Ok(Some(f as i64)),
        _ => Err(serde::de::Error::custom(format!("invalid value: {number}, expected a whole number within ±2^53"))),
    }
}

/// Sales channel used when a request names none.
pub const DEFAULT_CHANNEL: &str = "web";

/// Collects field errors while parsing.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, problem: Invalid) {
        self.0.push(FieldError { field: field.into(), problem: problem.0 });
    }
    /// Parses a required field.
    fn req<T, V>(
        &mut self,
        field: impl Into<String>,
        v: Option<V>,
        parse: impl FnOnce(V) -> Result<T, Invalid>,
    ) -> Option<T> {
        let field = field.into();
        match v {
            None => {
                self.push(field, Invalid::new("is required"));
                None
            }
            Some(v) => self.opt(field, Some(v), parse).flatten(),
        }
    }
    /// Parses an optional field: `Some(None)` when absent, `None` when present but bad.
    fn opt<T, V>(
        &mut self,
        field: impl Into<String>,
        v: Option<V>,
        parse: impl FnOnce(V) -> Result<T, Invalid>,
    ) -> Option<Option<T>> {
        match v.map(parse).transpose() {
            Ok(t) => Some(t),
            Err(e) => {
                self.push(field, e);
                None
            }
        }
    }
    fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(self.0),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerRequest {
    #[schema(value_type = CustomerId)]
    pub id: Option<String>,
    #[schema(value_type = Email)]
    pub email: Option<String>,
    #[schema(value_type = PersonName)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    #[schema(value_type = Sku)]
    pub sku: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(required = true, value_type = Quantity)]
    pub quantity: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(required = true, value_type = MinorUnits)]
    pub unit_price_minor: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    #[schema(value_type = AddressLine)]
    pub line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AddressLine>)]
    pub line2: Option<String>,
    #[schema(value_type = City)]
    pub city: Option<String>,
    #[schema(value_type = PostalCode)]
    pub postal_code: Option<String>,
    #[schema(value_type = CountryCode)]
    pub country: Option<String>,
}

/// Body of `POST /v1/orders`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    #[schema(value_type = OrderId)]
    pub order_id: Option<String>,
    #[schema(value_type = CustomerRequest)]
    pub customer: Option<CustomerRequest>,
    #[schema(value_type = Currency)]
    pub currency: Option<String>,
    /// 1 to 500 lines.
    #[schema(value_type = Vec<OrderLineRequest>, min_items = 1, max_items = 500)]
    pub lines: Option<Vec<OrderLineRequest>>,
    /// The sum of `quantity * unit_price_minor` over the lines.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(required = true, value_type = MinorUnits)]
    pub total_minor: Option<i64>,
    #[schema(value_type = AddressRequest)]
    pub shipping_address: Option<AddressRequest>,
    /// RFC 3339; the ingress's receive time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime, max_length = 64)]
    pub placed_at: Option<String>,
    /// Defaults to `web` ([`DEFAULT_CHANNEL`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Channel>)]
    pub channel: Option<String>,
}

impl OrderRequest {
    /// Validates every field and builds the event, or returns every problem found.
    /// `default_time` is used when `placed_at` is absent.
    pub fn into_event(self, event_id: Uuid, default_time: DateTime<Utc>) -> Result<OrderPlaced, Vec<FieldError>> {
        let mut p = Problems::default();
        let order_id = p.req("order_id", self.order_id, OrderId::parse);
        let customer = p.req("customer", self.customer, Ok).and_then(|c| {
            let id = p.req("customer.id", c.id, CustomerId::parse);
            let email = p.req("customer.email", c.email, Email::parse);
            let name = p.req("customer.name", c.name, PersonName::parse);
            Some(Customer { id: id?, email: email?, name: name? })
        });
        let currency = p.req("currency", self.currency, |c| Currency::parse(&c));
        let lines = p
            .req("lines", self.lines, |l| {
                if l.is_empty() {
                    Err(Invalid::new("must not be empty"))
                } else if l.len() > limits::ORDER_LINES {
                    Err(Invalid::new(format!("must have at most {} entries", limits::ORDER_LINES)))
                } else {
                    Ok(l)
                }
            })
            .map(|lines| {
                lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let sku = p.req(format!("lines[{i}].sku"), l.sku, Sku::parse);
                        let quantity = p.req(format!("lines[{i}].quantity"), l.quantity, Quantity::parse);
                        let price =
                            p.req(format!("lines[{i}].unit_price_minor"), l.unit_price_minor, MinorUnits::parse);
                        Some(OrderLine { sku: sku?, quantity: quantity?, unit_price_minor: price? })
                    })
                    .collect::<Vec<_>>()
            });
        let total_minor = p.req("total_minor", self.total_minor, MinorUnits::parse);
        let shipping_address = p.req("shipping_address", self.shipping_address, Ok).and_then(|a| {
            let line1 = p.req("shipping_address.line1", a.line1, AddressLine::parse);
            let line2 = p.opt("shipping_address.line2", a.line2, AddressLine::parse);
            let city = p.req("shipping_address.city", a.city, City::parse);
            let postal_code = p.req("shipping_address.postal_code", a.postal_code, PostalCode::parse);
            let country = p.req("shipping_address.country", a.country, |c| CountryCode::parse(&c));
            Some(Address { line1: line1?, line2: line2?, city: city?, postal_code: postal_code?, country: country? })
        });
        let placed_at = p
            .opt("placed_at", self.placed_at, |t| parse_event_time(&t))
            .map(|t| t.unwrap_or(crate::domain::event_time(default_time)));
        let channel = p
            .opt("channel", self.channel, Channel::parse)
            .map(|c| c.unwrap_or_else(|| Channel::parse(DEFAULT_CHANNEL).expect("DEFAULT_CHANNEL is a valid channel")));

        let lines: Option<Vec<OrderLine>> = lines.and_then(|l| l.into_iter().collect());
        let event = (|| {
            Some(OrderPlaced {
                event_id,
                order_id: order_id?,
                customer: customer?,
                currency: currency?,
                lines: lines?,
                total_minor: total_minor?,
                shipping_address: shipping_address?,
                placed_at: placed_at?,
                channel: channel?,
            })
        })();
        // Cross-field checks once every field parsed (the sum needs all the lines).
        if let Some(e) = &event
            && let Err((field, problem)) = e.validate()
        {
            p.push(field, problem);
        }
        p.finish(event)
    }
}

/// One entry of `POST /v1/inventory/changes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryChangeRequest {
    #[schema(value_type = Sku)]
    pub sku: Option<String>,
    #[schema(value_type = WarehouseId)]
    pub warehouse: Option<String>,
    /// Positive for received and returned, negative for shipped and damaged, either for adjusted.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(required = true, value_type = StockDelta)]
    pub delta: Option<i64>,
    #[schema(value_type = Reason)]
    pub reason: Option<String>,
    /// The order a shipment belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OrderId>)]
    pub order_id: Option<String>,
    /// RFC 3339; the ingress's receive time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime, max_length = 64)]
    pub occurred_at: Option<String>,
}

impl InventoryChangeRequest {
    /// Validates one change; field paths are prefixed with `prefix` (e.g. `changes[3].`).
    pub fn into_event_at(
        self,
        prefix: &str,
        event_id: Uuid,
        default_time: DateTime<Utc>,
    ) -> Result<InventoryChanged, Vec<FieldError>> {
        let mut p = Problems::default();
        let sku = p.req(format!("{prefix}sku"), self.sku, Sku::parse);
        let warehouse = p.req(format!("{prefix}warehouse"), self.warehouse, WarehouseId::parse);
        let delta = p.req(format!("{prefix}delta"), self.delta, StockDelta::parse);
        let reason = p.req(format!("{prefix}reason"), self.reason, |r| Reason::parse(&r));
        let order_id = p.opt(format!("{prefix}order_id"), self.order_id, OrderId::parse);
        let occurred_at = p
            .opt(format!("{prefix}occurred_at"), self.occurred_at, |t| parse_event_time(&t))
            .map(|t| t.unwrap_or(crate::domain::event_time(default_time)));
        let event = (|| {
            Some(InventoryChanged {
                event_id,
                sku: sku?,
                warehouse: warehouse?,
                delta: delta?,
                reason: reason?,
                order_id: order_id?,
                occurred_at: occurred_at?,
            })
        })();
        if let Some(e) = &event
            && let Err((field, problem)) = e.validate()
        {
            p.push(format!("{prefix}{field}"), problem);
        }
        p.finish(event)
    }
}

/// Body of `POST /v1/inventory/changes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryChangesRequest {
    /// 1 to 1000 changes.
    #[schema(value_type = Vec<InventoryChangeRequest>, min_items = 1, max_items = 1000)]
    pub changes: Option<Vec<InventoryChangeRequest>>,
}

impl InventoryChangesRequest {
    /// Validates every change; `event_id(i)` gives the id of change `i` (e.g. from
    /// [`crate::idempotent_event_id`]). Either all events or all problems.
    pub fn into_events(
        self,
        mut event_id: impl FnMut(usize) -> Uuid,
        default_time: DateTime<Utc>,
    ) -> Result<Vec<InventoryChanged>, Vec<FieldError>> {
        let mut p = Problems::default();
        let changes = p.req("changes", self.changes, |c| {
            if c.is_empty() {
                Err(Invalid::new("must not be empty"))
            } else if c.len() > limits::BATCH_CHANGES {
                Err(Invalid::new(format!("must have at most {} entries", limits::BATCH_CHANGES)))
            } else {
                Ok(c)
            }
        });
        let mut events = Vec::new();
        for (i, c) in changes.into_iter().flatten().enumerate() {
            match c.into_event_at(&format!("changes[{i}]."), event_id(i), default_time) {
                Ok(e) => events.push(e),
                Err(errs) => p.0.extend(errs),
            }
        }
        p.finish(Some(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T13:00:00.123456789Z").unwrap().with_timezone(&Utc)
    }

    fn order_json() -> serde_json::Value {
        json!({"order_id": "o-1", "customer": {"id": "c-1", "email": "ann@example.com", "name": "Ann"},
               "currency": "EUR", "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1999}],
               "total_minor": 3998, "shipping_address": {"line1": "Main 1", "city": "Bern",
               "postal_code": "3000", "country": "CH"}})
    }

    fn problems(v: serde_json::Value) -> Vec<String> {
        let r: OrderRequest = serde_json::from_value(v).unwrap();
        r.into_event(Uuid::nil(), t0()).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn valid_order_builds_event_with_defaults() {
        let r: OrderRequest = serde_json::from_value(order_json()).unwrap();
        let e = r.into_event(Uuid::nil(), t0()).unwrap();
        assert_eq!(e.total_minor.get(), 3998);
        assert_eq!(e.channel.as_str(), "web");
        assert_eq!(e.placed_at.timestamp_subsec_nanos(), 123_456_000, "truncated to micros");
    }

    #[test]
    fn whole_numbers_may_carry_a_zero_fraction_and_nothing_else_passes_as_one() {
        let mut v = order_json();
        v["lines"][0]["quantity"] = json!(2.0);
        v["total_minor"] = json!(3998.0);
        let r: OrderRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(r.into_event(Uuid::nil(), t0()).unwrap().total_minor.get(), 3998);
        for bad in [json!(2.5), json!(1e300), json!(-0.5), json!("2")] {
            v["lines"][0]["quantity"] = bad.clone();
            assert!(serde_json::from_value::<OrderRequest>(v.clone()).is_err(), "{bad}");
        }
        let missing: OrderRequest = serde_json::from_value(json!({})).unwrap();
        assert_eq!(missing.total_minor, None);
    }

    #[test]
    fn order_collects_every_problem_with_field_paths() {
        let mut v = order_json();
        v["lines"] = json!([{"sku": "A", "quantity": 1, "unit_price_minor": 1},
                            {"sku": "bad sku", "quantity": 0, "unit_price_minor": -5}]);
        v["currency"] = json!("EURO");
        v["customer"]["email"] = json!("nope");
        v["shipping_address"]["country"] = json!("XX");
        v["shipping_address"]["city"] = json!("x".repeat(101));
        v["placed_at"] = json!("yesterday");
        let p = problems(v);
        for expected in [
            "lines[1].sku: must contain only letters, digits and . _ -",
            "lines[1].quantity: must be at least 1",
            "lines[1].unit_price_minor: must not be negative",
            "currency: must be an active ISO 4217 currency code like EUR",
            "customer.email: must be an e-mail address like name@example.com",
            "shipping_address.country: must be an ISO 3166-1 alpha-2 country code like CH",
            "shipping_address.city: must be at most 100 characters",
            "placed_at: must be an RFC 3339 time like 2026-11-22T13:00:00Z",
        ] {
            assert!(p.iter().any(|x| x == expected), "missing {expected:?} in {p:#?}");
        }
        assert_eq!(p.len(), 8, "{p:#?}");
    }

    #[test]
    fn order_total_must_equal_sum_of_lines() {
        let mut v = order_json();
        v["total_minor"] = json!(4000);
        assert_eq!(problems(v), ["total_minor: must equal the sum of the lines (3998)"]);
    }

    #[test]
    fn order_reports_missing_and_empty() {
        let p = problems(json!({"lines": []}));
        for f in [
            "order_id: is required",
            "customer: is required",
            "currency: is required",
            "lines: must not be empty",
            "total_minor: is required",
            "shipping_address: is required",
        ] {
            assert!(p.iter().any(|x| x == f), "missing {f:?} in {p:#?}");
        }
    }

    #[test]
    fn order_rejects_overflowing_sum() {
        let mut v = order_json();
        v["lines"] = json!([{"sku": "A", "quantity": 100000, "unit_price_minor": 1_000_000_000_000_000i64}]);
        assert_eq!(problems(v), ["lines[0]: amount overflows"]);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v = order_json();
        v["placedAt"] = json!("2026-01-01T00:00:00Z");
        assert!(serde_json::from_value::<OrderRequest>(v).is_err());
    }

    #[test]
    fn inventory_batch_collects_problems_per_change() {
        let r: InventoryChangesRequest = serde_json::from_value(json!({"changes": [
            {"sku": "A", "warehouse": "w1", "delta": 5, "reason": "received"},
            {"sku": "A", "warehouse": "w1", "delta": 5, "reason": "shipped", "order_id": "o 1"},
            {"sku": "A", "warehouse": "w1", "delta": 0, "reason": "stolen"}
        ]}))
        .unwrap();
        let p: Vec<String> =
            r.into_events(|_| Uuid::nil(), t0()).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            p,
            [
                "changes[1].order_id: must contain only letters, digits and . _ : -",
                "changes[2].delta: must not be 0",
                "changes[2].reason: must be one of received, shipped, returned, adjusted, damaged",
            ]
        );
        let r: InventoryChangesRequest = serde_json::from_value(json!({"changes": [
            {"sku": "A", "warehouse": "w1", "delta": 5, "reason": "shipped"}]}))
        .unwrap();
        let p = r.into_events(|_| Uuid::nil(), t0()).unwrap_err();
        assert_eq!(p[0].to_string(), "changes[0].delta: must be negative for reason shipped");
    }

    #[test]
    fn inventory_batch_builds_events_with_ids_per_index() {
        let r: InventoryChangesRequest = serde_json::from_value(json!({"changes": [
            {"sku": "A", "warehouse": "w1", "delta": 5, "reason": "received", "occurred_at": "2026-11-22T14:00:00+01:00"},
            {"sku": "B", "warehouse": "w1", "delta": -1, "reason": "shipped", "order_id": "o-1"}]})).unwrap();
        let ev = r.into_events(|i| crate::idempotent_event_id("t", "k", i), t0()).unwrap();
        assert_eq!(ev.len(), 2);
        assert_ne!(ev[0].event_id, ev[1].event_id);
        assert_eq!(ev[0].event_id, crate::idempotent_event_id("t", "k", 0));
        assert_eq!(ev[0].occurred_at.to_rfc3339(), "2026-11-22T13:00:00+00:00");
        assert_eq!(ev[1].occurred_at, crate::domain::event_time(t0()));
        assert!(InventoryChangesRequest { changes: Some(vec![]) }.into_events(|_| Uuid::nil(), t0()).is_err());
    }
}
