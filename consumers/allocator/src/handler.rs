//! What an event does to the allocator's store, and which decisions it emits.
//!
//! A batch holds one partition's events, so it is either orders or stock changes:
//! - an `OrderPlaced` not decided before reserves each sku's quantity by the rule of
//!   [`crate::decide`]; what no warehouse has is queued as a backorder. A sku whose queue is
//!   not empty gives a new order nothing: first placed, first served. Decisions:
//!   `OrderAllocated` and/or `OrderBackordered`.
//! - an `InventoryChanged` moves `on_hand`; a shipment of an order also releases that many
//!   allocated units; stock that arrives serves the sku's queue in placement order, a line in
//!   full or in part (`BackorderAllocated`).
//!
//! Every decision is written to the outbox in the batch's transaction, so it is published if
//! and only if the batch commits. Event ids are derived from the order (and sku and cause),
//! so the decision made again after a rolled-back attempt carries the same id.

use orderflow_events::contract::{Field, InventoryChangedField, OrderPlacedField};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::Utc;
use orderflow_consumer_kit::{ordered_quantities, shipment};
use orderflow_events::{
    AllocatedLine, Allocation, Backorder, Event, MissingLine, Quantity, Sku, TraceParent, WarehouseId,
};
use orderflow_outbox::Outbox;
use orderflow_runtime::{BatchContext, Envelope, Handler, HandlerError};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::decide::{self, Bin};
use crate::store::{self, AllocationRow, DecidedOrder, Waiting};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The consumer's name: group, schema and DLQ prefix.
pub const NAME: &str = "allocator";

/// Namespace of the decisions' event ids (UUID v5).
pub const DECISION_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_7266_6c6f_7700_0000_0000_0002);

fn decision_id(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&DECISION_ID_NAMESPACE, parts.join("\u{0}").as_bytes())
}

/// Every event field this handler reads (its contract: `orderflow contracts`; a test replaces
/// every other field and expects the same store).
pub const READS: &[Field] = &[
    Field::OrderPlaced(OrderPlacedField::EventId),
    Field::OrderPlaced(OrderPlacedField::OrderId),
    Field::OrderPlaced(OrderPlacedField::LineSku),
    Field::OrderPlaced(OrderPlacedField::LineQuantity),
    Field::OrderPlaced(OrderPlacedField::PlacedAt),
    Field::InventoryChanged(InventoryChangedField::EventId),
    Field::InventoryChanged(InventoryChangedField::Sku),
    Field::InventoryChanged(InventoryChangedField::Warehouse),
    Field::InventoryChanged(InventoryChangedField::Delta),
    Field::InventoryChanged(InventoryChangedField::Reason),
    Field::InventoryChanged(InventoryChangedField::OrderId),
];

/// The allocator: decides against its store, publishes through `outbox`.
#[derive(Debug, Clone)]
pub struct Allocator {
    pub outbox: Outbox,
}

impl Handler for Allocator {
    orderflow_consumer_kit::registered!(crate::CONSUMER, MIGRATOR);

    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::OrderPlaced(_) | Event::InventoryChanged(_))
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &[Envelope], ctx: &BatchContext) -> Result<(), HandlerError> {
        if ctx.replay {
            // `connect` refuses --replay; this guards any other way in.
            return Err(HandlerError::permanent("the allocator does not replay: its decisions are facts"));
        }
        let mut skus = BTreeSet::new();
        for envelope in batch {
            match &envelope.event {
                Event::OrderPlaced(order) => skus.extend(order.lines.iter().map(|l| l.sku.as_str().to_owned())),
                Event::InventoryChanged(change) => {
                    skus.insert(change.sku.as_str().to_owned());
                }
                _ => {}
            }
        }
        // Every write of a sku's rows below happens under its lock (docs/allocation.md).
        orderflow_consumer_kit::lock_keys(tx, store::LOCK_CLASS, skus.iter().map(String::as_str)).await?;
        let mut batch_state = BatchState { stock: store::stock(tx, &skus).await?, ..BatchState::default() };
        let order_ids: Vec<&str> = batch
            .iter()
            .filter_map(|e| match &e.event {
                Event::OrderPlaced(order) => Some(order.order_id.as_str()),
                _ => None,
            })
            .collect();
        if !order_ids.is_empty() {
            batch_state.decided = store::decided(tx, &order_ids).await?;
            batch_state.queued = store::queued_skus(tx, &skus).await?;
        }
        for envelope in batch {
            match &envelope.event {
                Event::OrderPlaced(order) => batch_state.decide_order(order, envelope.traceparent.as_deref())?,
                Event::InventoryChanged(change) => {
                    let sku = change.sku.as_str();
                    let bins = batch_state.stock.entry(sku.to_owned()).or_default();
                    let warehouse = change.warehouse.as_str();
                    let bin = match bins.iter().position(|b| b.warehouse == warehouse) {
                        Some(i) => &mut bins[i],
                        None => {
                            bins.push(Bin { warehouse: warehouse.to_owned(), on_hand: 0, allocated: 0 });
                            bins.last_mut().expect("just pushed")
                        }
                    };
                    bin.on_hand += change.delta.get();
                    if let Some((_, units)) = shipment(change) {
                        bin.allocated -= units.min(bin.allocated);
                    }
                    if decide::free(bins) > 0 {
                        if !batch_state.queues.contains_key(sku) {
                            let queue = store::queue(tx, sku).await?;
                            batch_state.queues.insert(sku.to_owned(), queue);
                        }
                        batch_state.serve_queue(sku, change.event_id)?;
                    }
                }
                _ => {}
            }
        }
        let BatchState { stock, decided_now, allocations, new_backorders, covered, decisions, .. } = batch_state;
        store::save_stock(tx, &stock, &skus).await?;
        store::insert_decided(tx, &decided_now).await?;
        store::insert_allocations(tx, &allocations).await?;
        store::save_backorders(tx, &new_backorders, &covered).await?;
        // One statement for the batch's decisions, in the order they were made.
        let decisions: Vec<(Event, Option<TraceParent>)> = decisions
            .into_iter()
            .map(|(event, traceparent)| (event, traceparent.as_deref().and_then(|t| TraceParent::parse(t).ok())))
            .collect();
        self.outbox.enqueue_all(tx, &decisions).await?;
        for (event, _) in &decisions {
            metrics::counter!("orderflow_allocator_decisions_total", "decision" => event.ce_type()).increment(1);
        }
        Ok(())
    }
}

/// The batch's view of its skus, changed in memory under the skus' locks and written back
/// once at the end.
#[derive(Default)]
struct BatchState {
    stock: HashMap<String, Vec<Bin>>,
    /// Orders decided before or earlier in this batch.
    decided: HashSet<String>,
    /// Skus with lines waiting for stock.
    queued: HashSet<String>,
    /// Queues loaded in this batch, first placed first.
    queues: HashMap<String, Vec<Waiting>>,
    decided_now: Vec<DecidedOrder>,
    allocations: Vec<AllocationRow>,
    new_backorders: Vec<Waiting>,
    /// Waiting lines stock covered: what is still missing, `None` when nothing is.
    covered: BTreeMap<(String, String), Option<i64>>,
    decisions: Vec<(Event, Option<String>)>,
}

fn quantity(units: i64, what: &str) -> Result<Quantity, HandlerError> {
    Quantity::parse(units).map_err(|e| HandlerError::permanent(format!("{what} of {units} units: {e}")))
}

/// One line of an allocation event: `units` of `sku` from `warehouse` (ids read from the store
/// or the order, so a failure here is a permanent one).
fn allocated_line(sku: &Sku, warehouse: &str, units: i64) -> Result<AllocatedLine, HandlerError> {
    Ok(AllocatedLine {
        sku: sku.clone(),
        warehouse: WarehouseId::parse(warehouse)
            .map_err(|e| HandlerError::permanent(format!("warehouse {warehouse}: {e}")))?,
        quantity: quantity(units, "an allocation")?,
    })
}

impl BatchState {
    fn decide_order(
        &mut self,
        order: &orderflow_events::OrderPlaced,
        traceparent: Option<&str>,
    ) -> Result<(), HandlerError> {
        let order_id = order.order_id.as_str();
        if !self.decided.insert(order_id.to_owned()) {
            return Ok(());
        }
        let now = Utc::now();
        let allocated_id = decision_id(&["allocated", order_id]);
        let (mut allocated, mut missing) = (Vec::new(), Vec::new());
        for (sku, wanted) in ordered_quantities(order) {
            let taken = if self.queued.contains(&sku) {
                decide::Taken { parts: Vec::new(), missing: wanted }
            } else {
                decide::take(self.stock.entry(sku.clone()).or_default(), wanted)
            };
            let sku_id = Sku::parse(sku.as_str()).map_err(|e| HandlerError::permanent(format!("sku {sku}: {e}")))?;
            for (warehouse, units) in taken.parts {
                allocated.push(allocated_line(&sku_id, &warehouse, units)?);
                self.allocations.push(AllocationRow {
                    order_id: order_id.to_owned(),
                    sku: sku.clone(),
                    warehouse,
                    quantity: units,
                    event_id: allocated_id,
                    decided_at: now,
                });
            }
            if taken.missing > 0 {
                missing.push(MissingLine { sku: sku_id, quantity_missing: quantity(taken.missing, "a backorder")? });
                self.queued.insert(sku.clone());
                self.new_backorders.push(Waiting {
                    order_id: order_id.to_owned(),
                    sku,
                    quantity_missing: taken.missing,
                    placed_at: order.placed_at,
                    traceparent: traceparent.map(str::to_owned),
                });
            }
        }
        let trace = traceparent.map(str::to_owned);
        if !allocated.is_empty() {
            let event = Event::OrderAllocated(Allocation {
                event_id: allocated_id,
                order_id: order.order_id.clone(),
                caused_by: order.event_id,
                lines: allocated,
                decided_at: now,
            });
            self.push_decision(event, trace.clone())?;
        }
        if !missing.is_empty() {
            let event = Event::OrderBackordered(Backorder {
                event_id: decision_id(&["backordered", order_id]),
                order_id: order.order_id.clone(),
                caused_by: order.event_id,
                lines: missing,
                decided_at: now,
            });
            self.push_decision(event, trace)?;
        }
        self.decided_now.push(DecidedOrder {
            order_id: order_id.to_owned(),
            order_event_id: order.event_id,
            placed_at: order.placed_at,
            decided_at: now,
        });
        Ok(())
    }

    /// Give `sku`'s free units to its queue, first placed first, until one runs out.
    fn serve_queue(&mut self, sku: &str, caused_by: Uuid) -> Result<(), HandlerError> {
        let now = Utc::now();
        let bins = self.stock.entry(sku.to_owned()).or_default();
        let queue = self.queues.entry(sku.to_owned()).or_default();
        let mut served = Vec::new();
        while decide::free(bins) > 0 {
            let Some(head) = queue.first_mut() else { break };
            let taken = decide::take(bins, head.quantity_missing);
            let event_id = decision_id(&["backorder-allocated", &head.order_id, sku, &caused_by.to_string()]);
            let mut lines = Vec::new();
            for (warehouse, units) in taken.parts {
                lines.push((warehouse.clone(), units));
                self.allocations.push(AllocationRow {
                    order_id: head.order_id.clone(),
                    sku: sku.to_owned(),
                    warehouse,
                    quantity: units,
                    event_id,
                    decided_at: now,
                });
            }
            head.quantity_missing = taken.missing;
            let missing = (taken.missing > 0).then_some(taken.missing);
            self.covered.insert((head.order_id.clone(), sku.to_owned()), missing);
            served.push((head.order_id.clone(), event_id, lines, head.traceparent.clone()));
            if missing.is_none() {
                queue.remove(0);
            }
        }
        if queue.is_empty() {
            self.queued.remove(sku);
        }
        for (order_id, event_id, lines, traceparent) in served {
            let sku_id = Sku::parse(sku).map_err(|e| HandlerError::permanent(format!("sku {sku}: {e}")))?;
            let lines = lines
                .into_iter()
                .map(|(warehouse, units)| allocated_line(&sku_id, &warehouse, units))
                .collect::<Result<Vec<_>, HandlerError>>()?;
            let event = Event::BackorderAllocated(Allocation {
                event_id,
                order_id: orderflow_events::OrderId::parse(order_id.as_str())
                    .map_err(|e| HandlerError::permanent(format!("order {order_id}: {e}")))?,
                caused_by,
                lines,
                decided_at: now,
            });
            self.push_decision(event, traceparent)?;
        }
        Ok(())
    }

    fn push_decision(&mut self, event: Event, traceparent: Option<String>) -> Result<(), HandlerError> {
        event.validate().map_err(|(field, problem)| {
            HandlerError::permanent(format!("decision {} is not valid: {field}: {problem}", event.ce_type()))
        })?;
        self.decisions.push((event, traceparent));
        Ok(())
    }
}
