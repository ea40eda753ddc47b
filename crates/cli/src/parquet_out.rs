//! `orderflow export --format parquet`: typed columns for analysts (DuckDB, pandas, Spark read
//! Parquet natively). The output is a directory of part files, `part-00000.parquet`, ...: one
//! per flushed chunk (`--chunk` records, one row group), each written to a temporary name and
//! renamed when complete, so a resumed export continues with the next part and a reader of
//! `<dir>/*.parquet` never sees half a file.
//!
//! Columns: the record's position (`topic`, `partition`, `offset`, `timestamp`), then the
//! event's fields: ids and names as strings, money as `int64` minor units beside its
//! `currency`, quantities and deltas as `int64`, event times as `timestamp[us, UTC]`, and an
//! event's lines as a nested `list<struct<...>>`. A directory holds one event type, like the
//! CSV and Avro exports; records of another type are skipped and counted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow_array::builder::{
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use orderflow_events::{Event, EventKind};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// One exported record: where it was, and its event.
#[derive(Debug, Clone)]
pub struct Row {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (ms since the epoch), when it has one.
    pub timestamp_ms: Option<i64>,
    pub event: Event,
}

/// The name of part `n` in its directory.
pub fn part_name(n: u64) -> String {
    format!("part-{n:05}.parquet")
}

/// The part number of a file name written by [`part_name`] (or its temporary name).
fn part_number(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("part-")?;
    let digits = rest.strip_suffix(".parquet").or_else(|| rest.strip_suffix(".parquet.tmp"))?;
    digits.parse().ok()
}

/// Remove what an interrupted run left past the first `parts` parts: a temporary file, or a
/// part renamed after its chunk's state was last written (its records are exported again).
pub fn remove_parts_from(dir: &Path, parts: u64) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("Failed to list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if part_number(&name).is_some_and(|n| n >= parts) || name.ends_with(".parquet.tmp") {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("Failed to remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Write `rows` (all of `kind`) as part `n` of `dir`: one row group, Snappy-compressed.
pub fn write_part(dir: &Path, n: u64, kind: EventKind, rows: &[Row]) -> anyhow::Result<PathBuf> {
    let batch = batch(kind, rows)?;
    let path = dir.join(part_name(n));
    let tmp = dir.join(format!("{}.tmp", part_name(n)));
    let file = File::create(&tmp).with_context(|| format!("Failed to create {}", tmp.display()))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(rows.len().max(1)))
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties))?;
    writer.write(&batch).with_context(|| format!("Failed to write {}", tmp.display()))?;
    writer.close().with_context(|| format!("Failed to finish {}", tmp.display()))?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("Failed to rename {} to {}", tmp.display(), path.display()))?;
    Ok(path)
}

fn utc_micros() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// The columns every event type starts with: the record's position.
struct Position {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
}

impl Position {
    fn new() -> Self {
        Position {
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
        }
    }

    fn push(&mut self, row: &Row) {
        self.topic.append_value(&row.topic);
        self.partition.append_value(row.partition);
        self.offset.append_value(row.offset);
        self.timestamp.append_option(row.timestamp_ms);
    }

    fn finish(mut self) -> Vec<(&'static str, ArrayRef, bool)> {
        vec![
            ("topic", Arc::new(self.topic.finish()), false),
            ("partition", Arc::new(self.partition.finish()), false),
            ("offset", Arc::new(self.offset.finish()), false),
            ("timestamp", Arc::new(self.timestamp.finish()), true),
        ]
    }
}

/// A list of structs with these (name, type, nullable) fields.
fn lines_builder(fields: &[(&str, DataType, bool)]) -> ListBuilder<StructBuilder> {
    let fields: Vec<Field> = fields.iter().map(|(n, t, nullable)| Field::new(*n, t.clone(), *nullable)).collect();
    ListBuilder::new(StructBuilder::from_fields(fields, 0))
}

fn struct_field<T: arrow_array::builder::ArrayBuilder>(lines: &mut ListBuilder<StructBuilder>, i: usize) -> &mut T {
    lines.values().field_builder::<T>(i).expect("the builder's own field")
}

/// The record batch of `rows`, all of `kind`.
pub fn batch(kind: EventKind, rows: &[Row]) -> anyhow::Result<RecordBatch> {
    let mut position = Position::new();
    let mut columns: Vec<(&'static str, ArrayRef, bool)>;
    match kind {
        EventKind::OrderPlaced => {
            let mut strings: Vec<StringBuilder> = (0..11).map(|_| StringBuilder::new()).collect();
            let mut line2 = StringBuilder::new();
            let mut total = Int64Builder::new();
            let mut placed_at = utc_micros();
            let mut lines = lines_builder(&[
                ("sku", DataType::Utf8, false),
                ("quantity", DataType::Int64, false),
                ("unit_price_minor", DataType::Int64, false),
            ]);
            for row in rows {
                let Event::OrderPlaced(order) = &row.event else {
                    anyhow::bail!("not an OrderPlaced: {:?}", row.event.kind())
                };
                position.push(row);
                let address = &order.shipping_address;
                let values = [
                    order.event_id.to_string(),
                    order.order_id.as_str().to_owned(),
                    order.customer.id.as_str().to_owned(),
                    order.customer.email.as_str().to_owned(),
                    order.customer.name.as_str().to_owned(),
                    order.currency.as_str().to_owned(),
                    order.channel.as_str().to_owned(),
                    address.line1.as_str().to_owned(),
                    address.city.as_str().to_owned(),
                    address.postal_code.as_str().to_owned(),
                    address.country.as_str().to_owned(),
                ];
                for (builder, value) in strings.iter_mut().zip(values) {
                    builder.append_value(value);
                }
                line2.append_option(address.line2.as_ref().map(|l| l.as_str()));
                total.append_value(order.total_minor.get());
                placed_at.append_value(order.placed_at.timestamp_micros());
                for line in &order.lines {
                    struct_field::<StringBuilder>(&mut lines, 0).append_value(line.sku.as_str());
                    struct_field::<Int64Builder>(&mut lines, 1).append_value(i64::from(line.quantity.get()));
                    struct_field::<Int64Builder>(&mut lines, 2).append_value(line.unit_price_minor.get());
                    lines.values().append(true);
                }
                lines.append(true);
            }
            columns = position.finish();
            let names = [
                "event_id",
                "order_id",
                "customer_id",
                "customer_email",
                "customer_name",
                "currency",
                "channel",
                "shipping_line1",
                "shipping_city",
                "shipping_postal_code",
                "shipping_country",
            ];
            let mut strings = strings.into_iter();
            for name in &names[..6] {
                let mut b = strings.next().expect("one builder per name");
                columns.push((*name, Arc::new(b.finish()), false));
            }
            columns.push(("total_minor", Arc::new(total.finish()), false));
            columns.push(("placed_at", Arc::new(placed_at.finish()), false));
            for name in &names[6..8] {
                let mut b = strings.next().expect("one builder per name");
                columns.push((*name, Arc::new(b.finish()), false));
            }
            columns.push(("shipping_line2", Arc::new(line2.finish()), true));
            for name in &names[8..] {
                let mut b = strings.next().expect("one builder per name");
                columns.push((*name, Arc::new(b.finish()), false));
            }
            columns.push(("lines", Arc::new(lines.finish()), false));
        }
        EventKind::InventoryChanged => {
            let (mut event_id, mut sku, mut warehouse, mut reason, mut order_id) = (
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
                StringBuilder::new(),
            );
            let mut delta = Int64Builder::new();
            let mut occurred_at = utc_micros();
            for row in rows {
                let Event::InventoryChanged(change) = &row.event else {
                    anyhow::bail!("not an InventoryChanged: {:?}", row.event.kind())
                };
                position.push(row);
                event_id.append_value(change.event_id.to_string());
                sku.append_value(change.sku.as_str());
                warehouse.append_value(change.warehouse.as_str());
                delta.append_value(change.delta.get());
                reason.append_value(change.reason.as_str());
                order_id.append_option(change.order_id.as_ref().map(|o| o.as_str()));
                occurred_at.append_value(change.occurred_at.timestamp_micros());
            }
            columns = position.finish();
            columns.push(("event_id", Arc::new(event_id.finish()), false));
            columns.push(("sku", Arc::new(sku.finish()), false));
            columns.push(("warehouse", Arc::new(warehouse.finish()), false));
            columns.push(("delta", Arc::new(delta.finish()), false));
            columns.push(("reason", Arc::new(reason.finish()), false));
            columns.push(("order_id", Arc::new(order_id.finish()), true));
            columns.push(("occurred_at", Arc::new(occurred_at.finish()), false));
        }
        EventKind::OrderAllocated | EventKind::OrderBackordered | EventKind::BackorderAllocated => {
            let (mut event_id, mut order_id, mut caused_by) =
                (StringBuilder::new(), StringBuilder::new(), StringBuilder::new());
            let mut decided_at = utc_micros();
            // A backordered line has no warehouse, and its quantity is the quantity missing.
            let mut lines = lines_builder(&[
                ("sku", DataType::Utf8, false),
                ("warehouse", DataType::Utf8, true),
                ("quantity", DataType::Int64, false),
            ]);
            for row in rows {
                let (event, decision_lines): (_, Vec<(&str, Option<&str>, i64)>) = match &row.event {
                    Event::OrderAllocated(a) | Event::BackorderAllocated(a) => (
                        (a.event_id, &a.order_id, a.caused_by, a.decided_at),
                        a.lines
                            .iter()
                            .map(|l| (l.sku.as_str(), Some(l.warehouse.as_str()), i64::from(l.quantity.get())))
                            .collect(),
                    ),
                    Event::OrderBackordered(b) => (
                        (b.event_id, &b.order_id, b.caused_by, b.decided_at),
                        b.lines.iter().map(|l| (l.sku.as_str(), None, i64::from(l.quantity_missing.get()))).collect(),
                    ),
                    other => anyhow::bail!("not a decision: {:?}", other.kind()),
                };
                position.push(row);
                event_id.append_value(event.0.to_string());
                order_id.append_value(event.1.as_str());
                caused_by.append_value(event.2.to_string());
                decided_at.append_value(event.3.timestamp_micros());
                for (sku, warehouse, quantity) in decision_lines {
                    struct_field::<StringBuilder>(&mut lines, 0).append_value(sku);
                    struct_field::<StringBuilder>(&mut lines, 1).append_option(warehouse);
                    struct_field::<Int64Builder>(&mut lines, 2).append_value(quantity);
                    lines.values().append(true);
                }
                lines.append(true);
            }
            columns = position.finish();
            columns.push(("event_id", Arc::new(event_id.finish()), false));
            columns.push(("order_id", Arc::new(order_id.finish()), false));
            columns.push(("caused_by", Arc::new(caused_by.finish()), false));
            columns.push(("decided_at", Arc::new(decided_at.finish()), false));
            columns.push(("lines", Arc::new(lines.finish()), false));
        }
    }
    let fields: Vec<Field> =
        columns.iter().map(|(name, array, nullable)| Field::new(*name, array.data_type().clone(), *nullable)).collect();
    let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, array, _)| array).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).context("Failed to build the Parquet columns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_events::samples;

    fn row(event: Event) -> Row {
        Row { topic: "t".into(), partition: 1, offset: 7, timestamp_ms: Some(1_700_000_000_000), event }
    }

    #[test]
    fn every_event_type_has_typed_columns_and_lines_as_a_nested_list() {
        let order = batch(EventKind::OrderPlaced, &[row(samples::order_placed().into())]).unwrap();
        let schema = order.schema();
        assert_eq!(schema.field_with_name("total_minor").unwrap().data_type(), &DataType::Int64);
        assert!(
            matches!(schema.field_with_name("placed_at").unwrap().data_type(), DataType::Timestamp(_, Some(tz)) if tz.as_ref() == "UTC")
        );
        let DataType::List(item) = schema.field_with_name("lines").unwrap().data_type() else { panic!("lines") };
        assert!(matches!(item.data_type(), DataType::Struct(fields) if fields.len() == 3));
        assert_eq!(order.num_rows(), 1);
        let change = batch(EventKind::InventoryChanged, &[row(samples::inventory_changed().into())]).unwrap();
        assert_eq!(change.schema().field_with_name("delta").unwrap().data_type(), &DataType::Int64);
        assert!(batch(EventKind::InventoryChanged, &[row(samples::order_placed().into())]).is_err());
    }

    #[test]
    fn part_names_sort_in_order_and_parse_back() {
        assert_eq!(part_name(3), "part-00003.parquet");
        assert_eq!(part_number("part-00003.parquet"), Some(3));
        assert_eq!(part_number("part-00012.parquet.tmp"), Some(12));
        assert_eq!(part_number("notes.txt"), None);
    }
}
