//! Every consumer's field declaration (`Spec::reads`, docs/events.md "Who reads which field")
//! is honest: each consumer binary, as shipped, builds its store twice, once from a workload
//! and once from the same workload with every field it does not declare replaced by another
//! valid value, and the two stores are the same, row for row (columns stamped from the
//! consumer's own clock aside). A consumer that reads a field it does not declare gets a
//! different store, and this test names the consumer and the table.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use orderflow_events::contract::{AllocationField, BackorderField, Field, InventoryChangedField, OrderPlacedField};
use orderflow_events::{
    AllocatedLine, Allocation, Backorder, Channel, City, CountryCode, Currency, CustomerId, Email, Event,
    InventoryChangeRequest, MinorUnits, MissingLine, OrderId, OrderRequest, PersonName, PostalCode, Quantity, Reason,
    Sku, StockDelta, WarehouseId,
};
use orderflow_registry::{CONSUMERS, Spec};
use orderflow_testkit::events::{producer, publish};
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{database_url, fresh_topic, unique_ident, wait_until};
use sqlx::PgPool;
use uuid::Uuid;

/// Columns a consumer stamps from its own clock (or a sequence), which two runs never share.
const CLOCKED: &[(&str, &[&str])] = &[
    ("emails", &["created_at", "next_attempt_at"]),
    ("decided_orders", &["decided_at"]),
    ("allocations", &["decided_at"]),
    ("orderflow_outbox", &["id", "created_at", "published_at", "error"]),
];

/// The runtime's own tables: positions, event ids and offset moves, not the consumer's store.
const RUNTIME_TABLES: [&str; 5] = orderflow_runtime::store::RUNTIME_TABLES;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn order(id: &str, customer: &str, currency: &str, lines: &[(&str, i64, i64)], placed_at: &str, line2: bool) -> Event {
    let total: i64 = lines.iter().map(|(_, q, p)| q * p).sum();
    let mut address = serde_json::json!({"line1": "Main 1", "city": "Bern", "postal_code": "3000", "country": "CH"});
    if line2 {
        address["line2"] = "Flat 2".into();
    }
    let request: OrderRequest = serde_json::from_value(serde_json::json!({
        "order_id": id,
        "customer": {"id": customer, "email": format!("{customer}@example.com"), "name": format!("Customer {customer}")},
        "currency": currency,
        "lines": lines.iter().map(|(sku, q, p)| serde_json::json!({"sku": sku, "quantity": q, "unit_price_minor": p})).collect::<Vec<_>>(),
        "total_minor": total,
        "shipping_address": address,
        "placed_at": placed_at,
        "channel": "web",
    }))
    .unwrap();
    Event::OrderPlaced(request.into_event(Uuid::new_v4(), Utc::now()).unwrap())
}

fn change(sku: &str, warehouse: &str, delta: i64, reason: &str, order_id: Option<&str>, at: &str) -> Event {
    let request: InventoryChangeRequest = serde_json::from_value(serde_json::json!({
        "sku": sku, "warehouse": warehouse, "delta": delta, "reason": reason, "order_id": order_id, "occurred_at": at,
    }))
    .unwrap();
    Event::InventoryChanged(request.into_event_at("", Uuid::new_v4(), Utc::now()).unwrap())
}

fn allocation(order: &Event, lines: &[(&str, &str, u32)], refill: bool) -> Event {
    let Event::OrderPlaced(o) = order else { unreachable!() };
    let decision = Allocation {
        event_id: Uuid::new_v4(),
        order_id: o.order_id.clone(),
        caused_by: o.event_id,
        lines: lines
            .iter()
            .map(|(sku, w, q)| AllocatedLine {
                sku: Sku::parse(*sku).unwrap(),
                warehouse: WarehouseId::parse(*w).unwrap(),
                quantity: Quantity::parse(i64::from(*q)).unwrap(),
            })
            .collect(),
        decided_at: t("2026-11-02T10:00:00Z"),
    };
    if refill { Event::BackorderAllocated(decision) } else { Event::OrderAllocated(decision) }
}

fn backorder(order: &Event, lines: &[(&str, u32)]) -> Event {
    let Event::OrderPlaced(o) = order else { unreachable!() };
    Event::OrderBackordered(Backorder {
        event_id: Uuid::new_v4(),
        order_id: o.order_id.clone(),
        caused_by: o.event_id,
        lines: lines
            .iter()
            .map(|(sku, q)| MissingLine {
                sku: Sku::parse(*sku).unwrap(),
                quantity_missing: Quantity::parse(i64::from(*q)).unwrap(),
            })
            .collect(),
        decided_at: t("2026-11-02T10:00:00Z"),
    })
}

/// The workload, in phases; within a phase, per topic, in order. Each phase is applied before
/// the next is published, so a consumer that reads several topics sees them in one order.
fn workload() -> Vec<Vec<Event>> {
    let o1 = order("o-1", "c-1", "EUR", &[("A", 2, 250), ("B", 1, 999)], "2026-11-01T09:15:00Z", false);
    let o2 = order("o-2", "c-1", "CHF", &[("A", 1, 250)], "2026-11-01T11:40:00Z", true);
    let o3 = order("o-3", "c-2", "EUR", &[("C", 5, 120), ("A", 3, 250), ("B", 2, 998)], "2026-11-02T08:05:00Z", false);
    let o4 = order("o-4", "c-3", "EUR", &[("B", 40, 1000)], "2026-11-02T23:59:00Z", true);
    let stock = vec![
        change("A", "w1", 5, "received", None, "2026-10-31T08:00:00Z"),
        change("A", "w2", 3, "received", None, "2026-10-31T08:00:00Z"),
        change("B", "w1", 4, "received", None, "2026-10-31T09:00:00Z"),
        change("C", "w2", 10, "received", None, "2026-10-31T10:00:00Z"),
        change("C", "w2", -1, "damaged", None, "2026-10-31T12:00:00Z"),
    ];
    let decisions = vec![
        allocation(&o1, &[("A", "w1", 2), ("B", "w1", 1)], false),
        allocation(&o2, &[("A", "w2", 1)], false),
        allocation(&o3, &[("C", "w2", 5), ("A", "w1", 3)], false),
        backorder(&o3, &[("B", 2)]),
        backorder(&o4, &[("B", 37)]),
        allocation(&o4, &[("B", "w1", 3)], false),
        allocation(&o3, &[("B", "w1", 2)], true),
    ];
    let later = vec![
        change("B", "w1", 40, "received", None, "2026-11-03T07:00:00Z"),
        change("A", "w1", -2, "shipped", Some("o-1"), "2026-11-03T10:00:00Z"),
        change("B", "w1", -1, "shipped", Some("o-1"), "2026-11-03T10:00:00Z"),
        change("C", "w2", -5, "shipped", Some("o-3"), "2026-11-03T11:00:00Z"),
        change("A", "w1", 1, "returned", Some("o-1"), "2026-11-04T09:00:00Z"),
        change("A", "w2", -1, "adjusted", None, "2026-11-04T12:00:00Z"),
    ];
    vec![stock, vec![o1, o2, o3, o4], decisions, later]
}

fn other_id(id: &str) -> String {
    format!("p-{id}")
}

fn other_uuid(id: Uuid) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes())
}

fn later(at: DateTime<Utc>) -> DateTime<Utc> {
    at + TimeDelta::hours(1) + TimeDelta::seconds(7)
}

/// `event` with every field not in `reads` replaced by another valid value. Identifiers map
/// one to one (`x` to `p-x`, event ids to a v5 uuid), so distinct values stay distinct.
fn perturbed(event: &Event, reads: &[Field]) -> Event {
    let mut event = event.clone();
    let refill = matches!(event, Event::BackorderAllocated(_));
    match &mut event {
        Event::OrderPlaced(o) => {
            let keeps = |f: OrderPlacedField| reads.contains(&Field::OrderPlaced(f));
            use OrderPlacedField as F;
            if !keeps(F::EventId) {
                o.event_id = other_uuid(o.event_id);
            }
            if !keeps(F::OrderId) {
                o.order_id = OrderId::parse(other_id(o.order_id.as_str())).unwrap();
            }
            if !keeps(F::CustomerId) {
                o.customer.id = CustomerId::parse(other_id(o.customer.id.as_str())).unwrap();
            }
            if !keeps(F::CustomerEmail) {
                o.customer.email = Email::parse(format!("other.{}", o.customer.email.as_str())).unwrap();
            }
            if !keeps(F::CustomerName) {
                o.customer.name = PersonName::parse(format!("{} Jr", o.customer.name.as_str())).unwrap();
            }
            if !keeps(F::Currency) {
                let other = if o.currency.as_str() == "EUR" { "CHF" } else { "EUR" };
                o.currency = Currency::parse(other).unwrap();
            }
            for line in &mut o.lines {
                if !keeps(F::LineSku) {
                    line.sku = Sku::parse(other_id(line.sku.as_str())).unwrap();
                }
            }
            // Quantities, prices and the total are tied (the total is the lines' sum): vary
            // what is undeclared in ways that keep the order valid.
            let (quantity, price, total) = (keeps(F::LineQuantity), keeps(F::LineUnitPriceMinor), keeps(F::TotalMinor));
            for line in &mut o.lines {
                let (q, p) = (i64::from(line.quantity.get()), line.unit_price_minor.get());
                let (q, p) = match (quantity, price, total) {
                    (false, false, true) if p % 2 == 0 => (q * 2, p / 2),
                    (false, _, false) => (q + 1, if price { p } else { p + 3 }),
                    (true, false, false) => (q, p + 3),
                    _ => (q, p),
                };
                line.quantity = Quantity::parse(q).unwrap();
                line.unit_price_minor = MinorUnits::parse(p).unwrap();
            }
            if quantity && !price && total && o.lines.len() >= 2 {
                // Move value between two lines: p0 + q1 and p1 - q0 keep the sum.
                let (q0, q1) = (i64::from(o.lines[0].quantity.get()), i64::from(o.lines[1].quantity.get()));
                let (p0, p1) = (o.lines[0].unit_price_minor.get(), o.lines[1].unit_price_minor.get());
                if p1 >= q0 {
                    o.lines[0].unit_price_minor = MinorUnits::parse(p0 + q1).unwrap();
                    o.lines[1].unit_price_minor = MinorUnits::parse(p1 - q0).unwrap();
                }
            }
            if !total {
                let sum = o.lines.iter().map(|l| i64::from(l.quantity.get()) * l.unit_price_minor.get()).sum();
                o.total_minor = MinorUnits::parse(sum).unwrap();
            }
            let address = &mut o.shipping_address;
            if !keeps(F::ShippingLine1) {
                address.line1 = orderflow_events::AddressLine::parse(format!("{} b", address.line1.as_str())).unwrap();
            }
            if !keeps(F::ShippingLine2) {
                address.line2 = match &address.line2 {
                    Some(_) => None,
                    None => Some(orderflow_events::AddressLine::parse("Back house").unwrap()),
                };
            }
            if !keeps(F::ShippingCity) {
                address.city = City::parse(format!("{}x", address.city.as_str())).unwrap();
            }
            if !keeps(F::ShippingPostalCode) {
                address.postal_code = PostalCode::parse("9999").unwrap();
            }
            if !keeps(F::ShippingCountry) {
                address.country = CountryCode::parse("DE").unwrap();
            }
            if !keeps(F::PlacedAt) {
                o.placed_at = later(o.placed_at);
            }
            if !keeps(F::Channel) {
                o.channel = Channel::parse("app").unwrap();
            }
        }
        Event::InventoryChanged(c) => {
            let keeps = |f: InventoryChangedField| reads.contains(&Field::InventoryChanged(f));
            use InventoryChangedField as F;
            if !keeps(F::EventId) {
                c.event_id = other_uuid(c.event_id);
            }
            if !keeps(F::Sku) {
                c.sku = Sku::parse(other_id(c.sku.as_str())).unwrap();
            }
            if !keeps(F::Warehouse) {
                c.warehouse = WarehouseId::parse(other_id(c.warehouse.as_str())).unwrap();
            }
            if !keeps(F::Delta) {
                c.delta = StockDelta::parse(c.delta.get() * 2).unwrap();
            }
            if !keeps(F::Reason) {
                c.reason = match c.reason {
                    Reason::Adjusted if c.delta.get() > 0 => Reason::Received,
                    Reason::Adjusted => Reason::Damaged,
                    _ => Reason::Adjusted,
                };
            }
            if !keeps(F::OrderId) {
                c.order_id =
                    Some(OrderId::parse(other_id(c.order_id.as_ref().map_or("none", |o| o.as_str()))).unwrap());
            }
            if !keeps(F::OccurredAt) {
                c.occurred_at = later(c.occurred_at);
            }
        }
        Event::OrderAllocated(a) | Event::BackorderAllocated(a) => {
            let keeps = |f: AllocationField| {
                reads.contains(&if refill { Field::BackorderAllocated(f) } else { Field::OrderAllocated(f) })
            };
            use AllocationField as F;
            if !keeps(F::EventId) {
                a.event_id = other_uuid(a.event_id);
            }
            if !keeps(F::OrderId) {
                a.order_id = OrderId::parse(other_id(a.order_id.as_str())).unwrap();
            }
            if !keeps(F::CausedBy) {
                a.caused_by = other_uuid(a.caused_by);
            }
            for line in &mut a.lines {
                if !keeps(F::LineSku) {
                    line.sku = Sku::parse(other_id(line.sku.as_str())).unwrap();
                }
                if !keeps(F::LineWarehouse) {
                    line.warehouse = WarehouseId::parse(other_id(line.warehouse.as_str())).unwrap();
                }
                if !keeps(F::LineQuantity) {
                    line.quantity = Quantity::parse(i64::from(line.quantity.get()) + 1).unwrap();
                }
            }
            if !keeps(F::DecidedAt) {
                a.decided_at = later(a.decided_at);
            }
        }
        Event::OrderBackordered(b) => {
            let keeps = |f: BackorderField| reads.contains(&Field::OrderBackordered(f));
            use BackorderField as F;
            if !keeps(F::EventId) {
                b.event_id = other_uuid(b.event_id);
            }
            if !keeps(F::OrderId) {
                b.order_id = OrderId::parse(other_id(b.order_id.as_str())).unwrap();
            }
            if !keeps(F::CausedBy) {
                b.caused_by = other_uuid(b.caused_by);
            }
            for line in &mut b.lines {
                if !keeps(F::LineSku) {
                    line.sku = Sku::parse(other_id(line.sku.as_str())).unwrap();
                }
                if !keeps(F::LineQuantityMissing) {
                    line.quantity_missing = Quantity::parse(i64::from(line.quantity_missing.get()) + 1).unwrap();
                }
            }
            if !keeps(F::DecidedAt) {
                b.decided_at = later(b.decided_at);
            }
        }
    }
    event.validate().unwrap_or_else(|e| panic!("a perturbed event must stay valid: {e:?}"));
    event
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One run of a consumer binary on its own topics and schema.
struct Run {
    schemas: Vec<String>,
    dlq: String,
    topics: BTreeMap<&'static str, String>,
    _process: BinaryProcess,
}

async fn start(spec: &Spec, ns: &str, side: &str) -> Run {
    let mut topics = BTreeMap::new();
    for topic in spec.topics {
        topics.insert(*topic, fresh_topic(&format!("contracts-{side}-{}", topic.replace('.', "-")), 1).await);
    }
    let schema = format!("{ns}_{side}_{}", spec.schema());
    let group = format!("{ns}.{side}.{}", spec.name);
    let (dlq, listen) = (format!("{group}.dlq"), format!("127.0.0.1:{}", free_port()));
    let mut args = vec!["--listen", &listen, "--schema", &schema, "--group", &group, "--dlq-topic", &dlq];
    for topic in spec.topics {
        args.extend(["--topic", topics[topic].as_str()]);
    }
    // The email consumer would deliver (and stamp each delivery); in replay mode it stores
    // its emails without sending them.
    if spec.name == "email" {
        args.push("--replay");
    }
    let process = BinaryProcess::spawn(spec.binary, &args, &[]).unwrap();
    // The allocator also keeps its outbox in `<schema>_outbox`.
    Run { schemas: vec![schema.clone(), format!("{schema}_outbox")], dlq, topics, _process: process }
}

/// Wait until `run` has applied everything its topics hold.
async fn applied(pool: &PgPool, run: &Run, name: &str) {
    for topic in run.topics.values() {
        let end = orderflow_testkit::events::high_watermark_sum(topic);
        wait_until(&format!("{name} to apply {topic} up to {end}"), Duration::from_secs(60), || async {
            let sql = format!(
                "SELECT COALESCE(SUM(next_offset), 0)::bigint FROM {}.orderflow_offsets WHERE topic = $1",
                run.schemas[0]
            );
            let next: i64 = sqlx::query_scalar(&sql).bind(topic).fetch_one(pool).await.ok()?;
            (next >= end).then_some(())
        })
        .await;
    }
}

/// Every row of every table of the run's schemas (the runtime's tables and clocked columns
/// aside), as sorted JSON, per table.
async fn store(pool: &PgPool, run: &Run) -> BTreeMap<String, Vec<String>> {
    let mut tables = BTreeMap::new();
    for schema in &run.schemas {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1")
                .bind(schema)
                .fetch_all(pool)
                .await
                .unwrap();
        for table in names.into_iter().filter(|t| !RUNTIME_TABLES.contains(&t.as_str())) {
            let clocked: Vec<String> = CLOCKED
                .iter()
                .find(|(name, _)| *name == table)
                .map_or_else(Vec::new, |(_, columns)| columns.iter().map(|c| (*c).to_owned()).collect());
            let sql = if table == "orderflow_outbox" {
                // A decision's payload carries the allocator's clock in `decided_at`.
                format!(
                    r#"SELECT jsonb_set(to_jsonb(t) - $1::text[], '{{payload}}', t.payload - 'decided_at')::text
                       FROM "{schema}"."{table}" t"#
                )
            } else {
                format!(r#"SELECT (to_jsonb(t) - $1::text[])::text FROM "{schema}"."{table}" t"#)
            };
            let mut rows: Vec<String> = sqlx::query_scalar(&sql).bind(&clocked).fetch_all(pool).await.unwrap();
            rows.sort();
            tables.insert(table, rows);
        }
    }
    tables
}

#[tokio::test]
async fn every_consumer_reads_only_the_fields_it_declares() {
    orderflow_testkit::init_test_logs();
    let pool = PgPool::connect(&database_url()).await.unwrap();
    let producer = producer();
    let phases = workload();
    for spec in CONSUMERS {
        let ns = unique_ident("contracts");
        let original = start(spec, &ns, "a").await;
        let varied = start(spec, &ns, "b").await;
        for phase in &phases {
            for topic in spec.topics {
                let events: Vec<Event> = phase.iter().filter(|e| e.kind().topic() == *topic).cloned().collect();
                if events.is_empty() {
                    continue;
                }
                let others: Vec<Event> = events.iter().map(|e| perturbed(e, spec.reads)).collect();
                assert_ne!(events, others, "the workload varies something {} does not read", spec.name);
                publish(&producer, &original.topics[topic], &events).await;
                publish(&producer, &varied.topics[topic], &others).await;
            }
            applied(&pool, &original, spec.name).await;
            applied(&pool, &varied, spec.name).await;
        }
        for run in [&original, &varied] {
            // Every event was applied, none dead-lettered (a store built from nothing would
            // compare equal too).
            assert_eq!(
                orderflow_testkit::events::high_watermark_sum(&run.dlq),
                0,
                "{}: dead letters in {}",
                spec.name,
                run.dlq
            );
        }
        let (a, b) = (store(&pool, &original).await, store(&pool, &varied).await);
        assert!(a.values().map(Vec::len).sum::<usize>() > 0, "{}: the workload wrote nothing", spec.name);
        for (table, rows) in &a {
            assert_eq!(
                Some(rows),
                b.get(table),
                "{}: table {table} differs when the fields it does not declare change; it reads one of them \
                 (declared: {:?})",
                spec.name,
                spec.reads.iter().map(ToString::to_string).collect::<Vec<_>>()
            );
        }
        eprintln!("{}: {} tables, {} rows, equal", spec.name, a.len(), a.values().map(Vec::len).sum::<usize>());
    }
}
