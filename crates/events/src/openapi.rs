//! The OpenAPI schemas of the ingress's request bodies and of the domain values the read APIs
//! answer with: each domain type's JSON Schema states exactly what its `parse` accepts (length,
//! characters, range, code list), so a client or a fuzzer that follows the schema sends
//! values the ingress accepts, and one that breaks it is refused. The tests below hold each
//! pattern to its `parse`.
//!
//! What a schema cannot state stays in the 422 answer: an order's `total_minor` must equal the
//! sum of its lines, and a stock change's sign must suit its reason (see
//! [`crate::OrderPlaced::validate`] and [`crate::InventoryChanged::validate`]).

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::limits;
use crate::{
    AddressLine, Channel, City, CountryCode, Currency, CustomerId, Email, MinorUnits, OrderId, PersonName, PostalCode,
    Quantity, Reason, Sku, StockDelta, WarehouseId,
};

/// Identifiers: letters, digits and `. _ : -`.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:-]+$";
/// Skus and warehouses: letters, digits and `. _ -`.
pub const SKU_PATTERN: &str = "^[A-Za-z0-9._-]+$";
/// Channels: lower-case letters, digits, `_` and `-`.
pub const CHANNEL_PATTERN: &str = "^[a-z0-9_-]+$";
/// Postal codes: letters, digits, space and `-`, not only spaces.
pub const POSTAL_CODE_PATTERN: &str = "^[A-Za-z0-9 -]*[A-Za-z0-9-][A-Za-z0-9 -]*$";
/// Free text: no control characters, not blank.
pub const TEXT_PATTERN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$";
/// E-mail: a local part without spaces, control characters or `@`, then dot-separated labels
/// of letters, digits and inner `-` (at least two).
pub const EMAIL_PATTERN: &str = "^[^\\s@\\x00-\\x1f\\x7f-\\x9f]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";

fn string(description: &str, max: usize, pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(pattern))
}

fn int64() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// `impl ToSchema` for a domain type from the schema an expression builds.
macro_rules! schema {
    ($($ty:ty => $schema:expr;)*) => {$(
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                Schema::from($schema).into()
            }
        }
        impl ToSchema for $ty {}
    )*};
}

schema! {
    OrderId => string("Checkout's order id", limits::ID_LEN, ID_PATTERN).examples(["ORD-1001"]);
    CustomerId => string("Checkout's customer id", limits::ID_LEN, ID_PATTERN).examples(["CUST-42"]);
    Sku => string("Stock keeping unit", limits::SKU_LEN, SKU_PATTERN).examples(["SKU-RED-M"]);
    WarehouseId => string("Warehouse id", limits::SKU_LEN, SKU_PATTERN).examples(["ZRH-1"]);
    Channel => string("Sales channel (web, app, pos, ...)", limits::CHANNEL_LEN, CHANNEL_PATTERN).examples(["web"]);
    PersonName => string("A person's name", limits::NAME_CHARS, TEXT_PATTERN).examples(["Ada Lovelace"]);
    AddressLine => string("A street line", limits::ADDRESS_LINE_CHARS, TEXT_PATTERN).examples(["Bahnhofstrasse 1"]);
    City => string("A city", limits::CITY_CHARS, TEXT_PATTERN).examples(["Zürich"]);
    PostalCode => string("A postal code", limits::POSTAL_CODE_LEN, POSTAL_CODE_PATTERN).examples(["8001"]);
    Email => string("An e-mail address", limits::EMAIL_LEN, EMAIL_PATTERN).examples(["ada@example.com"]);
    Currency => ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("An active ISO 4217 currency code with minor units"))
        .enum_values(Some(crate::iso::currency_codes()))
        .examples(["EUR"]);
    CountryCode => ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("An ISO 3166-1 alpha-2 country code"))
        .enum_values(Some(crate::iso::country_codes()))
        .examples(["CH"]);
    Quantity => int64()
        .description(Some("Units"))
        .minimum(Some(1))
        .maximum(Some(limits::QUANTITY_MAX));
    MinorUnits => int64()
        .description(Some("An amount in the currency's minor unit (cents for EUR)"))
        .minimum(Some(0))
        .maximum(Some(limits::AMOUNT_MINOR_MAX));
    StockDelta => OneOfBuilder::new()
        .description(Some("Units added (positive) or removed (negative), never 0"))
        .item(int64().minimum(Some(-limits::DELTA_MAX)).maximum(Some(-1)))
        .item(int64().minimum(Some(1)).maximum(Some(limits::DELTA_MAX)));
    Reason => ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Why stock changed: received and returned add, shipped and damaged remove, adjusted either way",
        ))
        .enum_values(Some(Reason::ALL.into_iter().filter(|r| *r != Reason::Unknown).map(Reason::as_str)));
}

/// An RFC 3339 time as the ingress accepts it.
pub fn event_time() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .max_length(Some(64))
        .examples(["2026-11-22T13:00:00Z"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, value: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(value)
    }

    /// Characters every pattern is tried with, in and around a valid value.
    fn probes() -> Vec<char> {
        let mut chars: Vec<char> = (0u8..=0x7f).map(char::from).collect();
        chars.extend(['\u{80}', '\u{9f}', '\u{a0}', 'é', 'ß', '\u{2028}', '\u{3000}', '日', '😀', '\u{feff}']);
        chars
    }

    /// `pattern` and `max` (in characters) accept exactly what `parse` accepts, for values
    /// built around `valid`.
    fn agrees(name: &str, pattern: &str, max: usize, parse: impl Fn(&str) -> bool, valid: &str) {
        let schema_ok = |v: &str| !v.is_empty() && v.chars().count() <= max && matches(pattern, v);
        let mut candidates = vec![String::new(), valid.to_owned(), " ".to_owned(), "  ".to_owned()];
        for c in probes() {
            candidates.push(c.to_string());
            candidates.push(format!("{valid}{c}"));
            candidates.push(format!("{c}{valid}"));
            candidates.push(format!("{c}{c}"));
        }
        let long = valid.chars().next().unwrap().to_string();
        candidates.push(long.repeat(max));
        candidates.push(long.repeat(max + 1));
        for value in candidates {
            assert_eq!(schema_ok(&value), parse(&value), "{name}: {value:?} (schema says {})", schema_ok(&value));
        }
    }

    #[test]
    fn every_pattern_accepts_exactly_what_parse_accepts() {
        agrees("order id", ID_PATTERN, limits::ID_LEN, |v| OrderId::parse(v).is_ok(), "ORD-1:2.3_x");
        agrees("customer id", ID_PATTERN, limits::ID_LEN, |v| CustomerId::parse(v).is_ok(), "C-1");
        agrees("sku", SKU_PATTERN, limits::SKU_LEN, |v| Sku::parse(v).is_ok(), "SKU-1.a_b");
        agrees("warehouse", SKU_PATTERN, limits::SKU_LEN, |v| WarehouseId::parse(v).is_ok(), "W-1");
        agrees("channel", CHANNEL_PATTERN, limits::CHANNEL_LEN, |v| Channel::parse(v).is_ok(), "web_2-x");
        agrees(
            "postal code",
            POSTAL_CODE_PATTERN,
            limits::POSTAL_CODE_LEN,
            |v| PostalCode::parse(v).is_ok(),
            "80 01-A",
        );
        agrees("name", TEXT_PATTERN, limits::NAME_CHARS, |v| PersonName::parse(v).is_ok(), "Zoë Müller");
        agrees("city", TEXT_PATTERN, limits::CITY_CHARS, |v| City::parse(v).is_ok(), "Zürich");
        agrees("address", TEXT_PATTERN, limits::ADDRESS_LINE_CHARS, |v| AddressLine::parse(v).is_ok(), "Gasse 1");
    }

    #[test]
    fn the_email_pattern_accepts_exactly_what_parse_accepts() {
        let schema_ok = |v: &str| v.len() <= limits::EMAIL_LEN && matches(EMAIL_PATTERN, v);
        let mut candidates: Vec<String> = [
            "a.b+c@example.co.uk",
            "a@b",
            "@example.com",
            "a@-x.com",
            "a@x-.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@.com",
            "a@example..com",
            "a@@example.com",
            "é@example.com",
            "a@exämple.com",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        for c in probes() {
            candidates.push(format!("a{c}b@example.com"));
            candidates.push(format!("ab@ex{c}ample.com"));
        }
        candidates.push(format!("{}@example.com", "a".repeat(64)));
        candidates.push(format!("{}@example.com", "a".repeat(65)));
        candidates.push(format!("a@{}.com", "b".repeat(63)));
        candidates.push(format!("a@{}.com", "b".repeat(64)));
        candidates.push(format!("a@{}.com", vec!["b".repeat(60); 4].join(".")));
        for value in candidates {
            assert_eq!(schema_ok(&value), Email::parse(value.as_str()).is_ok(), "{value:?}");
        }
    }

    #[test]
    fn code_lists_and_ranges_are_the_parsers() {
        let list = |schema: RefOr<Schema>| -> Vec<String> {
            let json = serde_json::to_value(schema).unwrap();
            json["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        };
        for code in list(Currency::schema()) {
            assert!(Currency::parse(&code).is_ok(), "{code}");
        }
        for code in list(CountryCode::schema()) {
            assert!(CountryCode::parse(&code).is_ok(), "{code}");
        }
        assert!(Currency::parse("XAU").is_err() && !list(Currency::schema()).contains(&"XAU".to_owned()));
        let reasons = list(Reason::schema());
        for reason in Reason::ALL {
            assert_eq!(reasons.contains(&reason.as_str().to_owned()), Reason::parse(reason.as_str()).is_ok());
        }
        let ranges = |schema: RefOr<Schema>| {
            let json = serde_json::to_value(schema).unwrap();
            let items = json.get("oneOf").and_then(|v| v.as_array()).cloned().unwrap_or_else(|| vec![json.clone()]);
            items.iter().map(|r| (r["minimum"].as_i64().unwrap(), r["maximum"].as_i64().unwrap())).collect::<Vec<_>>()
        };
        for (schema, parse) in [
            (Quantity::schema(), (|n| Quantity::parse(n).is_ok()) as fn(i64) -> bool),
            (MinorUnits::schema(), |n| MinorUnits::parse(n).is_ok()),
            (StockDelta::schema(), |n| StockDelta::parse(n).is_ok()),
        ] {
            let ranges = ranges(schema);
            let inside = |n: i64| ranges.iter().any(|(min, max)| (*min..=*max).contains(&n));
            for (min, max) in &ranges {
                for n in [min - 1, *min, min + 1, max - 1, *max, max + 1, 0] {
                    assert_eq!(inside(n), parse(n), "{n} against {ranges:?}");
                }
            }
        }
    }

    #[test]
    fn request_bodies_require_what_validation_requires_and_bound_their_lists() {
        let order = serde_json::to_value(crate::OrderRequest::schema()).unwrap();
        let required: Vec<&str> = order["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(required, ["order_id", "customer", "currency", "lines", "total_minor", "shipping_address"]);
        assert_eq!(order["additionalProperties"], false);
        assert_eq!(order["properties"]["lines"]["maxItems"], limits::ORDER_LINES);
        let changes = serde_json::to_value(crate::InventoryChangesRequest::schema()).unwrap();
        assert_eq!(changes["properties"]["changes"]["maxItems"], limits::BATCH_CHANGES);
        assert_eq!(changes["required"], serde_json::json!(["changes"]));
    }
}
