//! A real Confluent-compatible Schema Registry between the producers and the consumers:
//! Apicurio Registry (Maven Central), which `scripts/stack test` starts in memory at
//! `ORDERFLOW_TEST_SCHEMA_REGISTRY_URL` (`scripts/stack registry up` by hand). The ingress and a
//! consumer run as shipped with `SCHEMA_REGISTRY_URL` set: the ingress's records carry the
//! Confluent wire format with the registry's ids, a newer writer schema registered in the
//! registry is fetched and read by the consumer, and a record naming an id the registry does
//! not know goes to the dead-letter topic, without stopping the consumer.

use std::time::Duration;

use apache_avro::types::Value as Avro;
use orderflow_events::{Codec, Event};
use orderflow_testkit::events::{order, order_request, producer, publish_raw};
use orderflow_testkit::process::BinaryProcess;
use orderflow_testkit::{API_TOKEN, fresh_topic, kafka_args, unique_ident, unique_name, wait_until};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "tok-registry-0123456789";

/// The registry's Confluent API (what `SCHEMA_REGISTRY_URL` is set to).
fn registry_url() -> String {
    std::env::var("ORDERFLOW_TEST_SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:18081/apis/ccompat/v7".to_owned())
}

fn free_port() -> u16 {
    orderflow_testkit::ports::free_port().unwrap()
}

/// A record as read: key, value, headers.
type Raw = (String, Vec<u8>, Vec<(String, String)>);

/// Every record of `topic`, read from the beginning until `n` arrived.
fn read_raw(topic: &str, n: usize, timeout: Duration) -> Vec<Raw> {
    let consumer: BaseConsumer =
        kafka_args().consumer_config(&orderflow_testkit::fresh_group("registry-read")).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..metadata.topics()[0].partitions().len() as i32 {
        assignment.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    let mut records = Vec::new();
    while records.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} records on {topic} after {timeout:?}",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.unwrap();
        records.push((
            String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            message.payload().unwrap_or_default().to_vec(),
            orderflow_testkit::events::header_pairs(&message).into_iter().collect(),
        ));
    }
    records
}

/// The schema id of a Confluent-framed value (magic byte 0, then the id, big-endian).
fn schema_id(value: &[u8]) -> u32 {
    assert!(value.len() > 5 && value[0] == 0, "not the Confluent wire format: {:?}", &value[..value.len().min(8)]);
    u32::from_be_bytes(value[1..5].try_into().unwrap())
}

/// The order schema with one more field a newer producer might add (optional, so the
/// consumers' reader schema resolves it by skipping it).
fn newer_order_schema() -> String {
    let path = orderflow_testkit::repo_root().join("schemas/order_placed.v1.avsc");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "gift_note", "type": ["null", "string"], "default": null}));
    schema.to_string()
}

/// `event` written with [`newer_order_schema`] (its `gift_note` set), as an Avro datum.
async fn newer_order_datum(event: &Event, newer: &str) -> Vec<u8> {
    let current = apache_avro::Schema::parse_str(
        &std::fs::read_to_string(orderflow_testkit::repo_root().join("schemas/order_placed.v1.avsc")).unwrap(),
    )
    .unwrap();
    let single_object = Codec::new().encode_single_object(event).unwrap();
    // Single-object encoding: 2 marker bytes and the 8-byte schema fingerprint, then the datum.
    let mut datum = &single_object[10..];
    let Avro::Record(mut fields) = apache_avro::from_avro_datum(&current, &mut datum, None).unwrap() else {
        panic!("an order is a record")
    };
    fields.push(("gift_note".into(), Avro::Union(1, Box::new(Avro::String("for Ada".into())))));
    let newer = apache_avro::Schema::parse_str(newer).unwrap();
    apache_avro::to_avro_datum(&newer, Avro::Record(fields)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producers_and_consumers_speak_the_confluent_wire_format_through_a_real_registry() {
    orderflow_testkit::init_test_logs();
    let registry = registry_url();
    let http = reqwest::Client::new();
    let reachable = http.get(format!("{registry}/subjects")).send().await;
    assert!(
        reachable.as_ref().is_ok_and(|r| r.status().is_success()),
        "no schema registry at {registry} ({reachable:?}): `scripts/stack registry up` starts one"
    );
    let ns = unique_ident("reg");
    let orders = fresh_topic("registry-orders", 2).await;
    let inventory = fresh_topic("registry-inventory", 1).await;
    let ingress = format!("127.0.0.1:{}", free_port());
    let history = format!("127.0.0.1:{}", free_port());
    let (schema, group, dlq) = (format!("{ns}_order_history"), format!("{ns}.order-history"), format!("{orders}.dlq"));
    let tokens = format!("checkout:{TOKEN}");
    let _ingress = BinaryProcess::spawn(
        "ingress",
        &["--listen", &ingress],
        &[
            ("INGRESS_TOKENS", tokens.as_str()),
            ("INGRESS_ORDERS_TOPIC", orders.as_str()),
            ("INGRESS_INVENTORY_TOPIC", inventory.as_str()),
            ("INGRESS_IDEMPOTENCY_SCHEMA", &format!("{ns}_ingress")),
            ("SCHEMA_REGISTRY_URL", registry.as_str()),
        ],
    )
    .unwrap();
    let _history = BinaryProcess::spawn(
        "order-history",
        &["--listen", &history, "--schema", &schema, "--group", &group, "--dlq-topic", &dlq, "--topic", &orders],
        &[("SCHEMA_REGISTRY_URL", registry.as_str())],
    )
    .unwrap();
    for addr in [&ingress, &history] {
        wait_until(&format!("{addr} to be ready"), Duration::from_secs(60), || async {
            let response = http.get(format!("http://{addr}/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }
    let customer_orders = |http: reqwest::Client| {
        let url = format!("http://{history}/v1/customers/c-1/orders");
        async move {
            let response = http.get(url).bearer_auth(API_TOKEN).send().await.ok()?;
            let body: Value = response.json().await.ok()?;
            let ids: Vec<String> =
                body["orders"].as_array()?.iter().filter_map(|o| o["order_id"].as_str().map(str::to_owned)).collect();
            Some(ids)
        }
    };

    let place = |order_id: String, sku: &'static str| {
        let request = http.post(format!("http://{ingress}/v1/orders")).bearer_auth(TOKEN);
        async move {
            let response = request.json(&order_request(&order_id, &[(sku, 2)])).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await.unwrap_or_default());
        }
    };

    // 1. The ingress registers the order schema under the topic's subject and frames its
    //    record with the registry's id; the consumer reads it.
    let first = unique_name("reg-first");
    place(first.clone(), "SKU-1").await;
    let records = read_raw(&orders, 1, Duration::from_secs(30));
    assert_eq!(records[0].0, first);
    let id = schema_id(&records[0].1);
    let registered: Value =
        http.get(format!("{registry}/schemas/ids/{id}")).send().await.unwrap().json().await.unwrap();
    let registered: Value = serde_json::from_str(registered["schema"].as_str().unwrap()).unwrap();
    assert_eq!(registered["name"], "OrderPlaced", "{registered}");
    let subject = format!("{orders}-value");
    let versions: Value =
        http.get(format!("{registry}/subjects/{subject}/versions")).send().await.unwrap().json().await.unwrap();
    assert_eq!(versions, json!([1]), "one version under {subject}");
    wait_until("the consumer to show the first order", Duration::from_secs(60), || async {
        customer_orders(http.clone()).await.filter(|ids| ids.contains(&first))
    })
    .await;

    // 2. A newer writer schema, registered by another producer: the consumer fetches it by id
    //    and resolves it to its own reader schema.
    let newer = newer_order_schema();
    let register = http
        .post(format!("{registry}/subjects/{subject}/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(json!({"schema": newer}).to_string())
        .send()
        .await
        .unwrap();
    assert!(register.status().is_success(), "{:?}", register.text().await);
    let newer_id = register.json::<Value>().await.unwrap()["id"].as_u64().unwrap() as u32;
    assert_ne!(newer_id, id, "a new schema gets a new id");
    let second = unique_name("reg-newer");
    let event = order(&second, &[("SKU-2", 1)]);
    let mut framed = vec![0];
    framed.extend_from_slice(&newer_id.to_be_bytes());
    framed.extend_from_slice(&newer_order_datum(&event, &newer).await);
    let producer = producer();
    publish_raw(&producer, &orders, &second, &framed).await;

    // 3. An id the registry never gave: dead-lettered, and the consumer carries on.
    let unknown = unique_name("reg-unknown");
    let mut garbage = vec![0];
    garbage.extend_from_slice(&(i32::MAX as u32).to_be_bytes());
    garbage.extend_from_slice(b"\x02\x04");
    publish_raw(&producer, &orders, &unknown, &garbage).await;
    let after = unique_name("reg-after");
    place(after.clone(), "SKU-3").await;

    let ids = wait_until(
        "the consumer to show the newer-schema order and the one after",
        Duration::from_secs(60),
        || async { customer_orders(http.clone()).await.filter(|ids| ids.contains(&second) && ids.contains(&after)) },
    )
    .await;
    assert!(!ids.contains(&unknown), "{ids:?}");
    let dead = read_raw(&dlq, 1, Duration::from_secs(60));
    assert_eq!(dead.len(), 1);
    let (key, value, headers) = &dead[0];
    assert_eq!((key, value), (&unknown, &garbage), "the record is dead-lettered as it came");
    let error = headers.iter().find(|(k, _)| k == "dlq_error_message").map(|(_, v)| v.as_str()).unwrap_or_default();
    assert!(error.contains(&(i32::MAX as u32).to_string()), "the error names the id: {headers:?}");
}
