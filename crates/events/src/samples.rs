//! Deterministic sample events for tests, benchmarks, golden vectors and docs (also handy in
//! other crates' tests). Built through the same validating constructors as real events.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::*;
use crate::event::{
    Address, AllocatedLine, Allocation, Backorder, Customer, InventoryChanged, MissingLine, OrderLine, OrderPlaced,
};

fn at(rfc3339: &str) -> DateTime<Utc> {
    crate::domain::parse_event_time(rfc3339).expect("sample time")
}

/// A typical order: three lines, EUR, with an address line 2.
pub fn order_placed() -> OrderPlaced {
    let lines = [("SKU-RED-M", 2, 1999), ("SKU-BLUE-L", 1, 4550), ("SKU-SOCKS", 3, 599)]
        .map(|(sku, q, p)| OrderLine {
            sku: Sku::parse(sku).expect("sample"),
            quantity: Quantity::parse(q).expect("sample"),
            unit_price_minor: MinorUnits::parse(p).expect("sample"),
        })
        .to_vec();
    OrderPlaced {
        event_id: Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0001),
        order_id: OrderId::parse("ord-2026-000042").expect("sample"),
        customer: Customer {
            id: CustomerId::parse("cus-17").expect("sample"),
            email: Email::parse("zoe.muller@example.ch").expect("sample"),
            name: PersonName::parse("Zoë Müller").expect("sample"),
        },
        currency: Currency::parse("EUR").expect("sample"),
        lines,
        total_minor: MinorUnits::parse(2 * 1999 + 4550 + 3 * 599).expect("sample"),
        shipping_address: Address {
            line1: AddressLine::parse("Bahnhofstrasse 1").expect("sample"),
            line2: Some(AddressLine::parse("c/o Example AG").expect("sample")),
            city: City::parse("Zürich").expect("sample"),
            postal_code: PostalCode::parse("8001").expect("sample"),
            country: CountryCode::parse("CH").expect("sample"),
        },
        placed_at: at("2026-11-22T13:05:07.123456Z"),
        channel: Channel::parse("web").expect("sample"),
    }
}

/// A shipment of [`order_placed`]'s first line.
pub fn inventory_changed() -> InventoryChanged {
    InventoryChanged {
        event_id: Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0002),
        sku: Sku::parse("SKU-RED-M").expect("sample"),
        warehouse: WarehouseId::parse("zrh-1").expect("sample"),
        delta: StockDelta::parse(-2).expect("sample"),
        reason: Reason::Shipped,
        order_id: Some(OrderId::parse("ord-2026-000042").expect("sample")),
        occurred_at: at("2026-11-22T15:30:00Z"),
    }
}

/// A goods receipt without an order.
pub fn inventory_received() -> InventoryChanged {
    InventoryChanged {
        event_id: Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0003),
        sku: Sku::parse("SKU-SOCKS").expect("sample"),
        warehouse: WarehouseId::parse("zrh-1").expect("sample"),
        delta: StockDelta::parse(500).expect("sample"),
        reason: Reason::Received,
        order_id: None,
        occurred_at: at("2026-11-20T08:00:00.000001Z"),
    }
}

/// A minimal order: one line, JPY (exponent 0), no address line 2, app channel.
pub fn order_placed_minimal() -> OrderPlaced {
    let mut o = order_placed();
    o.event_id = Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0004);
    o.order_id = OrderId::parse("ord-jp-1").expect("sample");
    o.currency = Currency::parse("JPY").expect("sample");
    o.lines.truncate(1);
    o.lines[0].unit_price_minor = MinorUnits::parse(1200).expect("sample");
    o.total_minor = MinorUnits::parse(2400).expect("sample");
    o.shipping_address.line2 = None;
    o.shipping_address.country = CountryCode::parse("JP").expect("sample");
    o.channel = Channel::parse("app").expect("sample");
    o
}

/// [`order_placed`]'s first decision: its first line split over two warehouses, its second line
/// from one; its third line is [`order_backordered`].
pub fn order_allocated() -> Allocation {
    let line = |sku: &str, warehouse: &str, quantity: i64| AllocatedLine {
        sku: Sku::parse(sku).expect("sample"),
        warehouse: WarehouseId::parse(warehouse).expect("sample"),
        quantity: Quantity::parse(quantity).expect("sample"),
    };
    Allocation {
        event_id: Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0005),
        order_id: OrderId::parse("ord-2026-000042").expect("sample"),
        caused_by: order_placed().event_id,
        lines: vec![line("SKU-RED-M", "zrh-1", 1), line("SKU-RED-M", "ber-2", 1), line("SKU-BLUE-L", "zrh-1", 1)],
        decided_at: at("2026-11-22T13:05:07.250000Z"),
    }
}

/// [`order_placed`]'s third line, which no warehouse had.
pub fn order_backordered() -> Backorder {
    Backorder {
        event_id: Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0006),
        order_id: OrderId::parse("ord-2026-000042").expect("sample"),
        caused_by: order_placed().event_id,
        lines: vec![MissingLine {
            sku: Sku::parse("SKU-SOCKS").expect("sample"),
            quantity_missing: Quantity::parse(3).expect("sample"),
        }],
        decided_at: at("2026-11-22T13:05:07.250000Z"),
    }
}

/// [`order_backordered`]'s line, covered by [`inventory_received`].
pub fn backorder_allocated() -> Allocation {
    Allocation {
        event_id: Uuid::from_u128(0x0193_5f2a_7c00_7000_8000_0000_0000_0007),
        order_id: OrderId::parse("ord-2026-000042").expect("sample"),
        caused_by: inventory_received().event_id,
        lines: vec![AllocatedLine {
            sku: Sku::parse("SKU-SOCKS").expect("sample"),
            warehouse: WarehouseId::parse("zrh-1").expect("sample"),
            quantity: Quantity::parse(3).expect("sample"),
        }],
        decided_at: at("2026-11-23T09:00:00Z"),
    }
}
