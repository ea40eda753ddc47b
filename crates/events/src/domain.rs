//! Domain newtypes. Every constructor is a validating `parse`: a value of one of these types
//! is known to be well formed and size-bounded, so handlers never see bad input.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

/// Why a value was rejected; the caller adds the field name (see [`crate::FieldError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub(crate) fn new(problem: impl Into<String>) -> Self {
        Invalid(problem.into())
    }
}

/// Size limits of every input (bytes for identifiers, characters for free text).
pub mod limits {
    /// Order, customer ids.
    pub const ID_LEN: usize = 64;
    /// Skus and warehouse ids.
    pub const SKU_LEN: usize = 64;
    /// RFC 5321 path limit.
    pub const EMAIL_LEN: usize = 254;
    pub const EMAIL_LOCAL_LEN: usize = 64;
    pub const NAME_CHARS: usize = 200;
    pub const ADDRESS_LINE_CHARS: usize = 200;
    pub const CITY_CHARS: usize = 100;
    pub const POSTAL_CODE_LEN: usize = 16;
    pub const CHANNEL_LEN: usize = 32;
    /// Lines of one order.
    pub const ORDER_LINES: usize = 500;
    /// Lines of one allocation decision: an order line's units may come from several
    /// warehouses, one decision line each.
    pub const DECISION_LINES: usize = 5_000;
    /// Changes in one `POST /v1/inventory/changes`.
    pub const BATCH_CHANGES: usize = 1000;
    pub const QUANTITY_MAX: u32 = 100_000;
    /// Largest unit price or total, in minor units (10^15: ten trillion EUR).
    pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;
    /// Largest |delta| of one stock change.
    pub const DELTA_MAX: i64 = 1_000_000_000;
}

fn check_len(s: &str, max: usize) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::new("must not be empty"));
    }
    if s.len() > max {
        return Err(Invalid::new(format!("must be at most {max} bytes")));
    }
    Ok(())
}

fn check_token(s: &str, max: usize, allowed: fn(u8) -> bool, what: &str) -> Result<(), Invalid> {
    check_len(s, max)?;
    if !s.bytes().all(allowed) {
        return Err(Invalid::new(format!("must contain only {what}")));
    }
    Ok(())
}

fn check_text(s: &str, max_chars: usize) -> Result<(), Invalid> {
    if s.len() > max_chars * 4 || s.chars().count() > max_chars {
        return Err(Invalid::new(format!("must be at most {max_chars} characters")));
    }
    if s.trim().is_empty() {
        return Err(Invalid::new("must not be blank"));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new("must not contain control characters"));
    }
    Ok(())
}

fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

fn sku_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A validated string newtype: `parse`, `as_str`, `Display`, serde as a plain string.
macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, |$s:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, Invalid> {
                let $s: String = value.into();
                $check?;
                Ok(Self($s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// Checkout's order id: 1..=64 of `[A-Za-z0-9._:-]`. Key of `orders.v1`.
    OrderId,
    |s| check_token(&s, limits::ID_LEN, id_byte, "letters, digits and . _ : -")
);
string_newtype!(
    /// Checkout's customer id: 1..=64 of `[A-Za-z0-9._:-]`.
    CustomerId,
    |s| check_token(&s, limits::ID_LEN, id_byte, "letters, digits and . _ : -")
);
string_newtype!(
    /// Stock keeping unit: 1..=64 of `[A-Za-z0-9._-]`. Key of `inventory.v1`.
    Sku,
    |s| check_token(&s, limits::SKU_LEN, sku_byte, "letters, digits and . _ -")
);
string_newtype!(
    /// Warehouse id: 1..=64 of `[A-Za-z0-9._-]`.
    WarehouseId,
    |s| check_token(&s, limits::SKU_LEN, sku_byte, "letters, digits and . _ -")
);
string_newtype!(
    /// Sales channel: 1..=32 of `[a-z0-9_-]` (web, app, pos, ...).
    Channel,
    |s| check_token(&s, limits::CHANNEL_LEN, |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-', "lower-case letters, digits, _ and -")
);
string_newtype!(
    /// A person's display name: 1..=200 characters, not blank, no control characters.
    PersonName,
    |s| check_text(&s, limits::NAME_CHARS)
);
string_newtype!(
    /// A street line: 1..=200 characters, not blank, no control characters.
    AddressLine,
    |s| check_text(&s, limits::ADDRESS_LINE_CHARS)
);
string_newtype!(
    /// A city: 1..=100 characters, not blank, no control characters.
    City,
    |s| check_text(&s, limits::CITY_CHARS)
);
string_newtype!(
    /// A postal code: 1..=16 of ASCII letters, digits, space and hyphen, not blank.
    PostalCode,
    |s| check_token(&s, limits::POSTAL_CODE_LEN, |b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-', "letters, digits, space and -")
        .and_then(|()| if s.trim().is_empty() { Err(Invalid::new("must not be blank")) } else { Ok(()) })
);
string_newtype!(
    /// An e-mail address: at most 254 bytes, `local@domain`, local part 1..=64 bytes without
    /// spaces or control characters, domain of dot-separated labels of letters, digits and `-`.
    Email,
    |s| check_email(&s)
);

fn check_email(s: &str) -> Result<(), Invalid> {
    check_len(s, limits::EMAIL_LEN)?;
    let bad = || Invalid::new("must be an e-mail address like name@example.com");
    let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || local.len() > limits::EMAIL_LOCAL_LEN
        || local.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(bad());
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.split('.').nth(1).is_none() || !domain.split('.').all(|l| label_ok(&l)) {
        return Err(bad());
    }
    Ok(())
}

/// ISO 4217 currency with its minor-unit exponent (active codes with minor units; funds,
/// metals and withdrawn codes are rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    pub fn parse(code: &str) -> Result<Self, Invalid> {
        crate::iso::currency_exponent(code)
            .map(|exponent| {
                let b = code.as_bytes();
                Currency { code: [b[0], b[1], b[2]], exponent }
            })
            .ok_or_else(|| Invalid::new("must be an active ISO 4217 currency code like EUR"))
    }
    pub fn as_str(&self) -> &str {
        // Only ever built from an ASCII table entry.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }
    /// Digits after the decimal point: 2 for EUR, 0 for JPY, 3 for KWD.
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}
impl TryFrom<String> for Currency {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ISO 3166-1 alpha-2 country code (officially assigned codes, upper case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn parse(code: &str) -> Result<Self, Invalid> {
        if crate::iso::is_country(code) {
            let b = code.as_bytes();
            Ok(CountryCode([b[0], b[1]]))
        } else {
            Err(Invalid::new("must be an ISO 3166-1 alpha-2 country code like CH"))
        }
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}
impl TryFrom<String> for CountryCode {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}
impl From<CountryCode> for String {
    fn from(c: CountryCode) -> String {
        c.as_str().to_owned()
    }
}
impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Units of one order line: 1..=100000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(u32);

impl Quantity {
    pub fn parse(n: i64) -> Result<Self, Invalid> {
        if n < 1 {
            Err(Invalid::new("must be at least 1"))
        } else if n > i64::from(limits::QUANTITY_MAX) {
            Err(Invalid::new(format!("must be at most {}", limits::QUANTITY_MAX)))
        } else {
            Ok(Quantity(n as u32))
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}
impl TryFrom<i64> for Quantity {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        Self::parse(n)
    }
}
impl From<Quantity> for i64 {
    fn from(q: Quantity) -> i64 {
        i64::from(q.0)
    }
}

/// A non-negative amount in minor units of some currency (cents for EUR), at most 10^15.
/// Arithmetic is checked: overflow is an error, never a wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct MinorUnits(i64);

impl MinorUnits {
    pub const ZERO: MinorUnits = MinorUnits(0);

    pub fn parse(n: i64) -> Result<Self, Invalid> {
        if n < 0 {
            Err(Invalid::new("must not be negative"))
        } else if n > limits::AMOUNT_MINOR_MAX {
            Err(Invalid::new(format!("must be at most {}", limits::AMOUNT_MINOR_MAX)))
        } else {
            Ok(MinorUnits(n))
        }
    }
    pub fn get(self) -> i64 {
        self.0
    }
    /// `self + other`, or an error past the amount limit.
    pub fn checked_add(self, other: MinorUnits) -> Result<MinorUnits, Invalid> {
        self.0.checked_add(other.0).ok_or_else(|| Invalid::new("amount overflows")).and_then(MinorUnits::parse)
    }
    /// `self * quantity`, or an error past the amount limit.
    pub fn checked_mul(self, quantity: Quantity) -> Result<MinorUnits, Invalid> {
        self.0
            .checked_mul(i64::from(quantity.get()))
            .ok_or_else(|| Invalid::new("amount overflows"))
            .and_then(MinorUnits::parse)
    }
}
impl TryFrom<i64> for MinorUnits {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        Self::parse(n)
    }
}
impl From<MinorUnits> for i64 {
    fn from(m: MinorUnits) -> i64 {
        m.0
    }
}

/// An amount with its currency. Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Money {
    pub minor: MinorUnits,
    pub currency: Currency,
}

impl Money {
    /// Sum of amounts that must all be in `currency`; overflow-checked.
    pub fn sum(currency: Currency, amounts: impl IntoIterator<Item = Money>) -> Result<Money, Invalid> {
        let mut total = MinorUnits::ZERO;
        for m in amounts {
            if m.currency != currency {
                return Err(Invalid::new(format!("mixes {} into a {} sum", m.currency, currency)));
            }
            total = total.checked_add(m.minor)?;
        }
        Ok(Money { minor: total, currency })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = u32::from(self.currency.exponent());
        let scale = 10i64.pow(e);
        if e == 0 {
            write!(f, "{} {}", self.minor.get(), self.currency)
        } else {
            let m = self.minor.get();
            write!(f, "{}.{:0w$} {}", m / scale, m % scale, self.currency, w = e as usize)
        }
    }
}

/// Signed change of units on hand: non-zero, |delta| <= 10^9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct StockDelta(i64);

impl StockDelta {
    pub fn parse(n: i64) -> Result<Self, Invalid> {
        if n == 0 {
            Err(Invalid::new("must not be 0"))
        } else if n.unsigned_abs() > limits::DELTA_MAX as u64 {
            Err(Invalid::new(format!("must be between -{0} and {0}", limits::DELTA_MAX)))
        } else {
            Ok(StockDelta(n))
        }
    }
    pub fn get(self) -> i64 {
        self.0
    }
}
impl TryFrom<i64> for StockDelta {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        Self::parse(n)
    }
}
impl From<StockDelta> for i64 {
    fn from(d: StockDelta) -> i64 {
        d.0
    }
}

/// Why stock changed. `Unknown` is never produced by orderflow: it is what a reader gets when a
/// newer writer used a reason added after this version (the Avro enum default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Received,
    Shipped,
    Returned,
    Adjusted,
    Damaged,
    Unknown,
}

impl Reason {
    /// Symbols in schema order (the Avro enum index is the position here).
    pub const ALL: [Reason; 6] =
        [Reason::Received, Reason::Shipped, Reason::Returned, Reason::Adjusted, Reason::Damaged, Reason::Unknown];

    /// Parses a reason a producer may send (`unknown` is rejected).
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match Self::from_symbol(s) {
            Some(r) if r != Reason::Unknown => Ok(r),
            _ => Err(Invalid::new("must be one of received, shipped, returned, adjusted, damaged")),
        }
    }
    pub(crate) fn from_symbol(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Received => "received",
            Reason::Shipped => "shipped",
            Reason::Returned => "returned",
            Reason::Adjusted => "adjusted",
            Reason::Damaged => "damaged",
            Reason::Unknown => "unknown",
        }
    }
    pub(crate) fn index(self) -> usize {
        self as usize
    }
    /// The sign a delta must have for this reason: received/returned add stock,
    /// shipped/damaged remove it, adjusted (and unknown) may go either way.
    pub fn check_delta(self, delta: StockDelta) -> Result<(), Invalid> {
        match self {
            Reason::Received | Reason::Returned if delta.get() < 0 => {
                Err(Invalid::new(format!("must be positive for reason {}", self.as_str())))
            }
            Reason::Shipped | Reason::Damaged if delta.get() > 0 => {
                Err(Invalid::new(format!("must be negative for reason {}", self.as_str())))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event time: UTC, microsecond precision (what Avro `timestamp-micros` carries), so a value
/// survives an encode/decode round trip unchanged.
pub fn event_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Parses RFC 3339 into an event time (truncated to microseconds).
pub fn parse_event_time(s: &str) -> Result<DateTime<Utc>, Invalid> {
    if s.len() > 64 {
        return Err(Invalid::new("must be at most 64 bytes"));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| event_time(t.with_timezone(&Utc)))
        .map_err(|_| Invalid::new("must be an RFC 3339 time like 2026-11-22T13:00:00Z"))
}

pub(crate) fn micros_to_time(micros: i64) -> Result<DateTime<Utc>, Invalid> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| Invalid::new("timestamp out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_odd_characters() {
        assert!(OrderId::parse("ord-1:2.3_x").is_ok());
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse("a".repeat(65)).is_err());
        assert!(OrderId::parse("a b").is_err());
        assert!(Sku::parse("SKU:1").is_err());
        assert!(Sku::parse("SKU-1").is_ok());
    }

    #[test]
    fn email_requires_local_at_dotted_domain() {
        assert!(Email::parse("a.b+c@example.co.uk").is_ok());
        for bad in ["", "a", "a@b", "@example.com", "a@-x.com", "a b@example.com", "a@exa mple.com", "a@.com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn currency_knows_exponents_and_rejects_unknown_codes() {
        assert_eq!(Currency::parse("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        for bad in ["eur", "XXX", "EU", "EURO", "XAU", "HRK", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn country_codes_are_upper_case_alpha2() {
        assert!(CountryCode::parse("CH").is_ok());
        for bad in ["ch", "XX", "CHE", "", "UK"] {
            assert!(CountryCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantity_and_amounts_are_bounded_and_checked() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(100_001).is_err());
        let max = MinorUnits::parse(limits::AMOUNT_MINOR_MAX).unwrap();
        assert!(max.checked_add(MinorUnits::parse(1).unwrap()).is_err());
        assert!(max.checked_mul(Quantity::parse(2).unwrap()).is_err());
        assert!(MinorUnits::parse(-1).is_err());
        let eur = Currency::parse("EUR").unwrap();
        let chf = Currency::parse("CHF").unwrap();
        let m = |n, c| Money { minor: MinorUnits::parse(n).unwrap(), currency: c };
        assert_eq!(Money::sum(eur, [m(1, eur), m(2, eur)]).unwrap().minor.get(), 3);
        assert!(Money::sum(eur, [m(1, eur), m(2, chf)]).is_err());
        assert_eq!(m(123456, eur).to_string(), "1234.56 EUR");
        assert_eq!(m(5, Currency::parse("KWD").unwrap()).to_string(), "0.005 KWD");
    }

    #[test]
    fn reason_sign_rules() {
        let d = |n| StockDelta::parse(n).unwrap();
        assert!(Reason::Received.check_delta(d(-1)).is_err());
        assert!(Reason::Shipped.check_delta(d(1)).is_err());
        assert!(Reason::Adjusted.check_delta(d(-1)).is_ok());
        assert!(Reason::parse("unknown").is_err());
        assert!(StockDelta::parse(0).is_err());
        assert!(StockDelta::parse(i64::MIN).is_err());
    }

    #[test]
    fn text_rejects_control_characters_and_length() {
        assert!(PersonName::parse("Zoë Müller").is_ok());
        assert!(PersonName::parse("a\u{0}b").is_err());
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse("é".repeat(201)).is_err());
        assert!(PersonName::parse("é".repeat(200)).is_ok());
    }
}
