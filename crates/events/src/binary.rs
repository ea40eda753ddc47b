//! Direct Avro binary encoder and decoder for the *current* schemas of this build, bypassing
//! apache-avro's `Value` tree and per-call schema resolution (its main cost). Used when writer
//! schema == reader schema (same fingerprint); any other writer goes through apache-avro's
//! resolution ([`crate::avro_value`]). Tests check byte equality with apache-avro's encoder.
//!
//! The decoder never trusts a length: string lengths are checked against the remaining input
//! before slicing, array counts against the line limit before allocating, varints stop at
//! 10 bytes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    AddressLine, Channel, City, CountryCode, Currency, CustomerId, Email, Invalid, MinorUnits, OrderId, PersonName,
    PostalCode, Quantity, Reason, Sku, StockDelta, WarehouseId, limits, micros_to_time,
};
use crate::error::DecodeError;
use crate::event::{
    Address, AllocatedLine, Allocation, Backorder, Customer, Event, InventoryChanged, MissingLine, OrderLine,
    OrderPlaced,
};

pub(crate) fn write_long(buf: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    write_long(buf, s.len() as i64);
    buf.extend_from_slice(s.as_bytes());
}

fn write_uuid(buf: &mut Vec<u8>, u: &Uuid) {
    let mut tmp = [0u8; 36];
    write_str(buf, u.hyphenated().encode_lower(&mut tmp));
}

fn write_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => write_long(buf, 0),
        Some(s) => {
            write_long(buf, 1);
            write_str(buf, s);
        }
    }
}

fn write_time(buf: &mut Vec<u8>, t: &DateTime<Utc>) {
    write_long(buf, t.timestamp_micros());
}

/// Appends the Avro datum of `event` (current schema) to `buf`.
pub(crate) fn encode(event: &Event, buf: &mut Vec<u8>) {
    match event {
        Event::OrderPlaced(e) => {
            write_uuid(buf, &e.event_id);
            write_str(buf, e.order_id.as_str());
            write_str(buf, e.customer.id.as_str());
            write_str(buf, e.customer.email.as_str());
            write_str(buf, e.customer.name.as_str());
            write_str(buf, e.currency.as_str());
            if !e.lines.is_empty() {
                write_long(buf, e.lines.len() as i64);
                for l in &e.lines {
                    write_str(buf, l.sku.as_str());
                    write_long(buf, i64::from(l.quantity));
                    write_long(buf, l.unit_price_minor.get());
                }
            }
            write_long(buf, 0);
            write_long(buf, e.total_minor.get());
            let a = &e.shipping_address;
            write_str(buf, a.line1.as_str());
            write_opt_str(buf, a.line2.as_ref().map(AddressLine::as_str));
            write_str(buf, a.city.as_str());
            write_str(buf, a.postal_code.as_str());
            write_str(buf, a.country.as_str());
            write_time(buf, &e.placed_at);
            write_str(buf, e.channel.as_str());
        }
        Event::InventoryChanged(e) => {
            write_uuid(buf, &e.event_id);
            write_str(buf, e.sku.as_str());
            write_str(buf, e.warehouse.as_str());
            write_long(buf, e.delta.get());
            write_long(buf, e.reason.index() as i64);
            write_opt_str(buf, e.order_id.as_ref().map(OrderId::as_str));
            write_time(buf, &e.occurred_at);
        }
        Event::OrderAllocated(e) | Event::BackorderAllocated(e) => {
            write_uuid(buf, &e.event_id);
            write_str(buf, e.order_id.as_str());
            write_uuid(buf, &e.caused_by);
            write_array(buf, &e.lines, |buf, l| {
                write_str(buf, l.sku.as_str());
                write_str(buf, l.warehouse.as_str());
                write_long(buf, i64::from(l.quantity));
            });
            write_time(buf, &e.decided_at);
        }
        Event::OrderBackordered(e) => {
            write_uuid(buf, &e.event_id);
            write_str(buf, e.order_id.as_str());
            write_uuid(buf, &e.caused_by);
            write_array(buf, &e.lines, |buf, l| {
                write_str(buf, l.sku.as_str());
                write_long(buf, i64::from(l.quantity_missing));
            });
            write_time(buf, &e.decided_at);
        }
    }
}

/// One block of `items` (none when empty), then the end of the array.
fn write_array<T>(buf: &mut Vec<u8>, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        write_long(buf, items.len() as i64);
        for i in items {
            item(buf, i);
        }
    }
    write_long(buf, 0);
}

/// Maps a domain rejection to a decode error naming the field.
pub(crate) fn field<T>(name: &str, r: Result<T, Invalid>) -> Result<T, DecodeError> {
    r.map_err(|e| DecodeError::Invalid { field: name.to_owned(), problem: e.0 })
}

pub(crate) fn parse_uuid(name: &str, s: &str) -> Result<Uuid, DecodeError> {
    // Only the canonical text (36 characters, lower-case, hyphenated) is accepted, so a
    // decoded event re-encodes to the same bytes.
    let bad = || Invalid::new("must be a lower-case hyphenated UUID");
    let u = field(name, Uuid::try_parse(s).map_err(|_| bad()))?;
    let mut tmp = [0u8; 36];
    if u.hyphenated().encode_lower(&mut tmp) != s {
        return field(name, Err(bad()));
    }
    Ok(u)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn long(&mut self, what: &str) -> Result<i64, DecodeError> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError::malformed(format!("{what}: truncated at byte {}", self.pos)));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(DecodeError::malformed(format!("{what}: varint overflows 64 bits")));
            }
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(DecodeError::malformed(format!("{what}: varint longer than 10 bytes")))
    }

    fn int(&mut self, what: &str) -> Result<i32, DecodeError> {
        let n = self.long(what)?;
        i32::try_from(n).map_err(|_| DecodeError::malformed(format!("{what}: {n} out of int range")))
    }

    fn str(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        let len = self.long(what)?;
        let remaining = self.buf.len() - self.pos;
        let len = usize::try_from(len).ok().filter(|&l| l <= remaining).ok_or_else(|| {
            DecodeError::malformed(format!("{what}: string length {len} with {remaining} bytes left"))
        })?;
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::malformed(format!("{what}: not UTF-8")))
    }

    fn opt_str(&mut self, what: &str) -> Result<Option<&'a str>, DecodeError> {
        match self.long(what)? {
            0 => Ok(None),
            1 => self.str(what).map(Some),
            n => Err(DecodeError::malformed(format!("{what}: union branch {n} of 2"))),
        }
    }

    fn time(&mut self, what: &str) -> Result<DateTime<Utc>, DecodeError> {
        let micros = self.long(what)?;
        field(what, micros_to_time(micros))
    }

    /// Item count of the next array block (0 ends the array); skips a block's byte size.
    fn block(&mut self, what: &str) -> Result<usize, DecodeError> {
        let n = self.long(what)?;
        let n = if n < 0 {
            self.long(what)?; // byte size of the block, not needed
            n.checked_neg().ok_or_else(|| DecodeError::malformed(format!("{what}: bad block count")))?
        } else {
            n
        };
        usize::try_from(n).map_err(|_| DecodeError::malformed(format!("{what}: bad block count {n}")))
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::malformed(format!("{n} trailing bytes after the record"))),
        }
    }
}

/// Decodes a datum written with the current schema of `kind` and validates it.
pub(crate) fn decode(kind: crate::EventKind, buf: &[u8]) -> Result<Event, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let event = match kind {
        crate::EventKind::OrderPlaced => Event::OrderPlaced(decode_order(&mut r)?),
        crate::EventKind::InventoryChanged => Event::InventoryChanged(decode_inventory(&mut r)?),
        crate::EventKind::OrderAllocated => Event::OrderAllocated(decode_allocation(&mut r)?),
        crate::EventKind::BackorderAllocated => Event::BackorderAllocated(decode_allocation(&mut r)?),
        crate::EventKind::OrderBackordered => Event::OrderBackordered(decode_backorder(&mut r)?),
    };
    r.finish()?;
    event.validate().map_err(|(f, e)| DecodeError::Invalid { field: f, problem: e.0 })?;
    Ok(event)
}

fn decode_order(r: &mut Reader<'_>) -> Result<OrderPlaced, DecodeError> {
    let event_id = parse_uuid("event_id", r.str("event_id")?)?;
    let order_id = field("order_id", OrderId::parse(r.str("order_id")?))?;
    let customer = Customer {
        id: field("customer.id", CustomerId::parse(r.str("customer.id")?))?,
        email: field("customer.email", Email::parse(r.str("customer.email")?))?,
        name: field("customer.name", PersonName::parse(r.str("customer.name")?))?,
    };
    let currency = field("currency", Currency::parse(r.str("currency")?))?;
    let mut lines = Vec::new();
    loop {
        let n = r.block("lines")?;
        if n == 0 {
            break;
        }
        if lines.len() + n > limits::ORDER_LINES {
            return Err(DecodeError::Invalid {
                field: "lines".into(),
                problem: format!("must have at most {} entries", limits::ORDER_LINES),
            });
        }
        lines.reserve(n);
        for _ in 0..n {
            let i = lines.len();
            // Field paths are formatted only on failure: this loop is the decoder's hot spot.
            let at = |f: &str, e: Invalid| DecodeError::Invalid { field: format!("lines[{i}].{f}"), problem: e.0 };
            let sku = Sku::parse(r.str("sku")?).map_err(|e| at("sku", e))?;
            let quantity = Quantity::parse(i64::from(r.int("quantity")?)).map_err(|e| at("quantity", e))?;
            let unit_price_minor =
                MinorUnits::parse(r.long("unit_price_minor")?).map_err(|e| at("unit_price_minor", e))?;
            lines.push(OrderLine { sku, quantity, unit_price_minor });
        }
    }
    let total_minor = field("total_minor", MinorUnits::parse(r.long("total_minor")?))?;
    let shipping_address = Address {
        line1: field("shipping_address.line1", AddressLine::parse(r.str("line1")?))?,
        line2: r.opt_str("line2")?.map(|s| field("shipping_address.line2", AddressLine::parse(s))).transpose()?,
        city: field("shipping_address.city", City::parse(r.str("city")?))?,
        postal_code: field("shipping_address.postal_code", PostalCode::parse(r.str("postal_code")?))?,
        country: field("shipping_address.country", CountryCode::parse(r.str("country")?))?,
    };
    let placed_at = r.time("placed_at")?;
    let channel = field("channel", Channel::parse(r.str("channel")?))?;
    Ok(OrderPlaced { event_id, order_id, customer, currency, lines, total_minor, shipping_address, placed_at, channel })
}

fn decode_inventory(r: &mut Reader<'_>) -> Result<InventoryChanged, DecodeError> {
    let event_id = parse_uuid("event_id", r.str("event_id")?)?;
    let sku = field("sku", Sku::parse(r.str("sku")?))?;
    let warehouse = field("warehouse", WarehouseId::parse(r.str("warehouse")?))?;
    let delta = field("delta", StockDelta::parse(r.long("delta")?))?;
    let idx = r.int("reason")?;
    let reason = usize::try_from(idx)
        .ok()
        .and_then(|i| Reason::ALL.get(i).copied())
        .ok_or_else(|| DecodeError::malformed(format!("reason: enum index {idx} out of range")))?;
    let order_id = r.opt_str("order_id")?.map(|s| field("order_id", OrderId::parse(s))).transpose()?;
    let occurred_at = r.time("occurred_at")?;
    Ok(InventoryChanged { event_id, sku, warehouse, delta, reason, order_id, occurred_at })
}

/// Reads an array's blocks, at most [`limits::DECISION_LINES`] items, with `item` per item.
fn read_lines<'a, T>(
    r: &mut Reader<'a>,
    mut item: impl FnMut(&mut Reader<'a>, usize) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut lines = Vec::new();
    loop {
        let n = r.block("lines")?;
        if n == 0 {
            return Ok(lines);
        }
        if lines.len() + n > limits::DECISION_LINES {
            return Err(DecodeError::Invalid {
                field: "lines".into(),
                problem: format!("must have at most {} entries", limits::DECISION_LINES),
            });
        }
        for _ in 0..n {
            let i = lines.len();
            lines.push(item(r, i)?);
        }
    }
}

fn line_field<T>(i: usize, name: &str, r: Result<T, Invalid>) -> Result<T, DecodeError> {
    r.map_err(|e| DecodeError::Invalid { field: format!("lines[{i}].{name}"), problem: e.0 })
}

fn decode_allocation(r: &mut Reader<'_>) -> Result<Allocation, DecodeError> {
    let event_id = parse_uuid("event_id", r.str("event_id")?)?;
    let order_id = field("order_id", OrderId::parse(r.str("order_id")?))?;
    let caused_by = parse_uuid("caused_by", r.str("caused_by")?)?;
    let lines = read_lines(r, |r, i| {
        Ok(AllocatedLine {
            sku: line_field(i, "sku", Sku::parse(r.str("sku")?))?,
            warehouse: line_field(i, "warehouse", WarehouseId::parse(r.str("warehouse")?))?,
            quantity: line_field(i, "quantity", Quantity::parse(i64::from(r.int("quantity")?)))?,
        })
    })?;
    let decided_at = r.time("decided_at")?;
    Ok(Allocation { event_id, order_id, caused_by, lines, decided_at })
}

fn decode_backorder(r: &mut Reader<'_>) -> Result<Backorder, DecodeError> {
    let event_id = parse_uuid("event_id", r.str("event_id")?)?;
    let order_id = field("order_id", OrderId::parse(r.str("order_id")?))?;
    let caused_by = parse_uuid("caused_by", r.str("caused_by")?)?;
    let lines = read_lines(r, |r, i| {
        Ok(MissingLine {
            sku: line_field(i, "sku", Sku::parse(r.str("sku")?))?,
            quantity_missing: line_field(
                i,
                "quantity_missing",
                Quantity::parse(i64::from(r.int("quantity_missing")?)),
            )?,
        })
    })?;
    let decided_at = r.time("decided_at")?;
    Ok(Backorder { event_id, order_id, caused_by, lines, decided_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_varints_round_trip_at_the_edges() {
        for n in [0i64, -1, 1, 63, -64, 64, i64::MAX, i64::MIN, i32::MAX as i64, i32::MIN as i64] {
            let mut b = Vec::new();
            write_long(&mut b, n);
            let mut r = Reader { buf: &b, pos: 0 };
            assert_eq!(r.long("n").unwrap(), n);
            assert_eq!(r.pos, b.len());
        }
        let mut r = Reader { buf: &[0xff; 11], pos: 0 };
        assert!(r.long("n").is_err());
    }

    #[test]
    fn string_length_beyond_input_is_rejected_without_allocating() {
        let mut b = Vec::new();
        write_long(&mut b, 1 << 62);
        let mut r = Reader { buf: &b, pos: 0 };
        let e = r.str("s").unwrap_err().to_string();
        assert!(e.contains("string length 4611686018427387904"), "{e}");
    }
}
