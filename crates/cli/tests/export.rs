//! `orderflow export`: Avro files fastavro reads back identically, CSV flattening, an
//! interrupted export that resumes without loss or repeats, and export → re-publish round trip.

mod common;

use std::path::Path;

use orderflow_cli::export::{ExportArgs, Format, export, state_path};
use orderflow_cli::tail::TailArgs;
use orderflow_events::Event;
use orderflow_testkit::events::{order, producer, publish, publish_raw};
use orderflow_testkit::{fresh_topic, kafka_args};

fn two_line_orders(prefix: &str, n: usize) -> Vec<Event> {
    (0..n).map(|i| order(&format!("{prefix}-{i}"), &[("sku-a", 1), ("sku-b", (i + 1) as u32)])).collect()
}

fn python() -> String {
    std::env::var("ORDERFLOW_PYTHON").unwrap_or_else(|_| "/root/.orderflow/venv/bin/python".into())
}

fn read_avro_with_fastavro(path: &Path) -> Vec<serde_json::Value> {
    let script = "import sys, json, fastavro\n\
                  with open(sys.argv[1], 'rb') as f:\n\
                  \x20   for r in fastavro.reader(f):\n\
                  \x20       print(json.dumps(r, default=str))\n";
    let output = std::process::Command::new(python()).args(["-c", script]).arg(path).output().expect("python runs");
    assert!(output.status.success(), "fastavro failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_avro_export_is_read_by_fastavro_as_the_same_records_and_csv_has_a_row_per_order_line() {
    // Arrange: 10 two-line orders over 3 partitions and one undecodable record.
    let topic = fresh_topic("export-avro", 3).await;
    let events = two_line_orders("o", 10);
    publish(&producer(), &topic, &events).await;
    publish_raw(&producer(), &topic, "junk", b"junk").await;
    let dir = tempfile::tempdir().unwrap();
    let avro = dir.path().join("orders.avro");
    let csv = dir.path().join("orders.csv");

    // Act: the Avro export is interrupted after its first chunk and continued.
    let mut args = ExportArgs::new(&topic, Format::Avro, &avro);
    args.chunk = 3;
    let first = export(&kafka_args(), &args, common::when_exists(state_path(&avro))).await.unwrap();
    assert!(first.written_total < 10, "{first:?}");
    let summary = export(&kafka_args(), &args, std::future::pending()).await.unwrap();
    assert!(summary.resumed);
    let csv_summary =
        export(&kafka_args(), &ExportArgs::new(&topic, Format::Csv, &csv), std::future::pending()).await.unwrap();

    // Assert: fastavro reads every decodable record with the same content.
    assert_eq!((summary.written_total, summary.skipped_total), (10, 1));
    let mut read = read_avro_with_fastavro(&avro);
    read.sort_by_key(|r| r["order_id"].as_str().unwrap().to_owned());
    let mut expected: Vec<&Event> = events.iter().collect();
    expected.sort_by_key(|e| e.order_id().map(|o| o.as_str().to_owned()));
    assert_eq!(read.len(), 10);
    for (record, event) in read.iter().zip(expected) {
        let Event::OrderPlaced(order) = event else { unreachable!() };
        assert_eq!(record["event_id"].as_str(), Some(order.event_id.to_string().as_str()));
        assert_eq!(record["order_id"].as_str(), Some(order.order_id.as_str()));
        assert_eq!(record["total_minor"].as_i64(), Some(order.total_minor.get()));
        assert_eq!(record["customer"]["email"].as_str(), Some(order.customer.email.as_str()));
        let skus: Vec<&str> = record["lines"].as_array().unwrap().iter().map(|l| l["sku"].as_str().unwrap()).collect();
        assert_eq!(skus, ["sku-a", "sku-b"]);
    }

    // CSV: a header and one row per order line.
    assert_eq!(csv_summary.written_total, 10);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("topic,partition,offset,timestamp,event_id,order_id"), "{}", lines[0]);
    assert_eq!(lines.len(), 1 + 20);
    assert_eq!(lines.iter().filter(|l| l.contains(",o-3,")).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_export_resumes_without_losing_or_repeating_records() {
    // Arrange: 10 orders and one junk record.
    let topic = fresh_topic("export-resume", 2).await;
    publish(&producer(), &topic, &two_line_orders("r", 10)).await;
    publish_raw(&producer(), &topic, "junk", b"junk").await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("orders.jsonl");
    let mut args = ExportArgs::new(&topic, Format::Jsonl, &output);
    args.chunk = 1;

    // Act 1: stop right after the first flushed chunk, then leave a torn half-line behind,
    // as a crash in the middle of the next chunk would.
    let first = export(&kafka_args(), &args, common::when_exists(state_path(&output))).await.unwrap();
    assert_eq!(first.written_now, 1);
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(&output).unwrap().write_all(b"{\"torn\":").unwrap();

    // Act 2: run it again.
    let second = export(&kafka_args(), &args, std::future::pending()).await.unwrap();
    let third = export(&kafka_args(), &args, std::future::pending()).await.unwrap();

    // Assert: every record exactly once.
    assert!(second.resumed);
    assert_eq!((second.written_now, second.written_total), (10, 11));
    assert_eq!(third.written_now, 0);
    let text = std::fs::read_to_string(&output).unwrap();
    let mut positions: Vec<(i64, i64)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["partition"].as_i64().unwrap(), v["offset"].as_i64().unwrap()))
        .collect();
    positions.sort();
    let before = positions.len();
    positions.dedup();
    assert_eq!((before, positions.len()), (11, 11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_json_lines_publish_back_to_the_same_events() {
    // Arrange
    let topic = fresh_topic("export-trip", 2).await;
    let events = two_line_orders("t", 6);
    publish(&producer(), &topic, &events).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("orders.jsonl");

    // Act: export, parse the values back into events, publish them to a fresh topic, tail it.
    export(&kafka_args(), &ExportArgs::new(&topic, Format::Jsonl, &output), std::future::pending()).await.unwrap();
    let reimported: Vec<Event> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_value(serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].clone()).unwrap()
        })
        .collect();
    let copy = fresh_topic("export-trip-copy", 2).await;
    publish(&producer(), &copy, &reimported).await;
    let tailed = common::tail_json(&TailArgs::new(&copy)).await;

    // Assert
    let mut original: Vec<Event> = events.clone();
    let mut back: Vec<Event> = tailed.iter().map(|l| serde_json::from_value(l["value"].clone()).unwrap()).collect();
    original.sort_by_key(|e| e.event_id());
    back.sort_by_key(|e| e.event_id());
    assert_eq!(back, original);
}

/// Every row of a Parquet directory as pyarrow reads it, times as microseconds since the epoch,
/// and the type of each column.
fn read_parquet_with_pyarrow(dir: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let script = "import sys, json, calendar, datetime, pyarrow.parquet as pq\n\
                  t = pq.read_table(sys.argv[1])\n\
                  def enc(v):\n\
                  \x20   if isinstance(v, datetime.datetime):\n\
                  \x20       return calendar.timegm(v.utctimetuple()) * 1000000 + v.microsecond\n\
                  \x20   return str(v)\n\
                  print(json.dumps({f.name: str(f.type) for f in t.schema}))\n\
                  for r in t.to_pylist():\n\
                  \x20   print(json.dumps(r, default=enc))\n";
    let output = std::process::Command::new(python()).args(["-c", script]).arg(dir).output().expect("python runs");
    assert!(output.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
    let schema = lines.next().expect("the schema line");
    (schema, lines.collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_parquet_export_is_read_by_pyarrow_with_typed_columns_and_every_value_of_the_topic() {
    // Arrange: 10 two-line orders over 3 partitions, one undecodable record, one stock change
    // (another event type: skipped like the junk).
    let topic = fresh_topic("export-parquet", 3).await;
    let events = two_line_orders("p", 10);
    publish(&producer(), &topic, &events).await;
    publish_raw(&producer(), &topic, "junk", b"junk").await;
    let change = orderflow_testkit::events::stock_change("sku-a", -2, "shipped", Some("p-1"));
    publish(&producer(), &topic, std::slice::from_ref(&change)).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("orders");
    let mut args = ExportArgs::new(&topic, Format::Parquet, &dir);
    args.chunk = 3;

    // Act: interrupted after its first part; an interrupted later part left behind (renamed
    // before its state was saved, and a temporary file); then continued.
    let first = export(&kafka_args(), &args, common::when_exists(state_path(&dir))).await.unwrap();
    assert!(first.written_total < 10, "{first:?}");
    std::fs::copy(dir.join("part-00000.parquet"), dir.join("part-00007.parquet")).unwrap();
    std::fs::write(dir.join("part-00008.parquet.tmp"), b"half a file").unwrap();
    let summary = export(&kafka_args(), &args, std::future::pending()).await.unwrap();

    // Assert: every order once, every value as published, in typed columns.
    assert!(summary.resumed);
    assert_eq!((summary.written_total, summary.skipped_total), (10, 2));
    assert!(!dir.join("part-00008.parquet.tmp").exists());
    let (schema, mut rows) = read_parquet_with_pyarrow(&dir);
    for (column, expected) in [
        ("partition", "int32"),
        ("offset", "int64"),
        ("total_minor", "int64"),
        ("placed_at", "timestamp[us, tz=UTC]"),
        ("timestamp", "timestamp[ms, tz=UTC]"),
        ("currency", "string"),
    ] {
        assert_eq!(schema[column], expected, "{column}: {schema}");
    }
    let lines = schema["lines"].as_str().unwrap();
    assert!(lines.starts_with("list<") && lines.contains("struct<sku: string not null, quantity: int64"), "{lines}");
    assert_eq!(rows.len(), 10, "no order lost or repeated: {rows:?}");
    rows.sort_by_key(|r| r["order_id"].as_str().unwrap().to_owned());
    let mut expected: Vec<&Event> = events.iter().collect();
    expected.sort_by_key(|e| e.order_id().map(|o| o.as_str().to_owned()));
    for (row, event) in rows.iter().zip(expected) {
        let Event::OrderPlaced(order) = event else { unreachable!() };
        let a = &order.shipping_address;
        assert_eq!(row["topic"], topic.as_str());
        for (column, value) in [
            ("event_id", order.event_id.to_string()),
            ("order_id", order.order_id.as_str().to_owned()),
            ("customer_id", order.customer.id.as_str().to_owned()),
            ("customer_email", order.customer.email.as_str().to_owned()),
            ("customer_name", order.customer.name.as_str().to_owned()),
            ("currency", order.currency.as_str().to_owned()),
            ("channel", order.channel.as_str().to_owned()),
            ("shipping_line1", a.line1.as_str().to_owned()),
            ("shipping_city", a.city.as_str().to_owned()),
            ("shipping_postal_code", a.postal_code.as_str().to_owned()),
            ("shipping_country", a.country.as_str().to_owned()),
        ] {
            assert_eq!(row[column].as_str(), Some(value.as_str()), "{column} of {}", order.order_id.as_str());
        }
        assert_eq!(row["shipping_line2"].as_str(), a.line2.as_ref().map(|l| l.as_str()));
        assert_eq!(row["total_minor"].as_i64(), Some(order.total_minor.get()));
        assert_eq!(row["placed_at"].as_i64(), Some(order.placed_at.timestamp_micros()));
        let lines: Vec<(String, i64, i64)> = row["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["sku"].as_str().unwrap().to_owned(),
                    l["quantity"].as_i64().unwrap(),
                    l["unit_price_minor"].as_i64().unwrap(),
                )
            })
            .collect();
        let published: Vec<(String, i64, i64)> = order
            .lines
            .iter()
            .map(|l| (l.sku.as_str().to_owned(), i64::from(l.quantity.get()), l.unit_price_minor.get()))
            .collect();
        assert_eq!(lines, published);
    }

    // Stock changes: deltas as integers, the order id nullable.
    let changes = root.path().join("changes");
    let mut args = ExportArgs::new(&topic, Format::Parquet, &changes);
    args.from_offset = None;
    let only_changes = orderflow_testkit::fresh_topic("export-parquet-stock", 1).await;
    let unlinked = orderflow_testkit::events::stock_change("sku-b", 40, "received", None);
    publish(&producer(), &only_changes, &[change.clone(), unlinked]).await;
    args.topic = only_changes;
    export(&kafka_args(), &args, std::future::pending()).await.unwrap();
    let (schema, mut rows) = read_parquet_with_pyarrow(&changes);
    assert_eq!(
        (schema["delta"].as_str(), schema["occurred_at"].as_str()),
        (Some("int64"), Some("timestamp[us, tz=UTC]"))
    );
    rows.sort_by_key(|r| r["delta"].as_i64());
    assert_eq!(rows.iter().map(|r| r["delta"].as_i64().unwrap()).collect::<Vec<_>>(), [-2, 40]);
    assert_eq!((rows[0]["order_id"].as_str(), rows[1]["order_id"].is_null()), (Some("p-1"), true));
    assert_eq!(rows[0]["reason"], "shipped");
}
