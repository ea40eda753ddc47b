//! The email consumer against the real broker, Postgres and a real SMTP server (Python's
//! aiosmtpd, `tests/smtp_sink.py`, interpreter from `ORDERFLOW_PYTHON`): one email per order
//! with the right recipient, Message-ID and content; retries while the server is down; and
//! nothing sent during a replay.

use std::time::Duration;

use orderflow_consumer_kit::testing::{TestConsumer, isolated_args, start};
use orderflow_email::{SenderArgs, connect};
use orderflow_events::{Event, PersonName};
use orderflow_testkit::events::{order, producer, publish};
use orderflow_testkit::smtp::SmtpSink;
use orderflow_testkit::{fresh_topic, wait_until};
use serde_json::Value;

fn free_port() -> u16 {
    orderflow_testkit::ports::free_port().unwrap()
}

/// The email consumer on a fresh orders topic, delivering to 127.0.0.1:`smtp_port` with
/// quick retries.
async fn start_email(prefix: &str, smtp_port: u16, replay: bool) -> (TestConsumer, String) {
    start_email_with(prefix, smtp_port, replay, 100).await
}

async fn start_email_with(prefix: &str, smtp_port: u16, replay: bool, max_attempts: u32) -> (TestConsumer, String) {
    let orders = fresh_topic(&format!("{prefix}-orders"), 3).await;
    let mut args = isolated_args(prefix, std::slice::from_ref(&orders));
    args.replay = replay;
    let mut sender = SenderArgs::new(&format!("smtp://127.0.0.1:{smtp_port}")).unwrap();
    sender.email_retry_base_ms = 100;
    sender.email_retry_max_ms = 400;
    sender.email_max_attempts = max_attempts;
    sender.email_poll_ms = 20;
    let consumer = start(connect(args, sender).await.expect("store connects")).await;
    (consumer, orders)
}

/// The email consumer with the shipped sender settings, except the attempt budget.
async fn start_email_shipped(prefix: &str, smtp_port: u16, max_attempts: u32) -> (TestConsumer, String) {
    let orders = fresh_topic(&format!("{prefix}-orders"), 3).await;
    let args = isolated_args(prefix, std::slice::from_ref(&orders));
    let mut sender = SenderArgs::new(&format!("smtp://127.0.0.1:{smtp_port}")).unwrap();
    sender.email_max_attempts = max_attempts;
    let consumer = start(connect(args, sender).await.expect("store connects")).await;
    (consumer, orders)
}

/// The SMTP circuit's state as the consumer's /metrics shows it for `smtp_port`
/// (0 closed, 1 half-open, 2 open).
async fn circuit_state(consumer: &TestConsumer, smtp_port: u16) -> Option<u8> {
    let text = consumer.client.get(format!("{}/metrics", consumer.base_url)).send().await.ok()?.text().await.ok()?;
    let series = format!("orderflow_email_smtp_circuit_state{{smtp=\"127.0.0.1:{smtp_port}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u8)
}

async fn email_of(consumer: &TestConsumer, order_id: &str, check: impl Fn(&Value) -> bool) -> Value {
    consumer
        .wait_for(
            &format!("the email of {order_id} to satisfy the check"),
            &format!("/v1/emails?order_id={order_id}"),
            |status, body| {
                let email = body["emails"].as_array()?.first()?.clone();
                (status == 200 && check(&email)).then_some(email)
            },
        )
        .await
}

fn event_id(event: &Event) -> uuid::Uuid {
    event.event_id()
}

#[tokio::test]
async fn an_order_gets_exactly_one_confirmation_with_its_recipient_message_id_and_content() {
    let port = free_port();
    let sink = SmtpSink::on(port).await;
    let (consumer, orders) = start_email("email-one", port, false).await;
    let mut placed = order("o-1", &[("SKU-A", 2), ("SKU-B", 1)]);
    if let Event::OrderPlaced(o) = &mut placed {
        o.customer.name = PersonName::parse("Ada <Countess> & Co").unwrap();
    }
    // The same order published again under a new event id (an upstream re-publish).
    let republished = order("o-1", &[("SKU-A", 2), ("SKU-B", 1)]);
    publish(&producer(), &orders, &[placed.clone(), republished]).await;

    let email = email_of(&consumer, "o-1", |e| e["status"] == "sent").await;
    let message_id = format!("<{}@orderflow>", event_id(&placed));
    assert_eq!(email["to"], "ada@example.com");
    assert_eq!(email["attempts"], 1);
    assert_eq!(email["message_id"], message_id.as_str());

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "exactly one message: {messages:#?}");
    let message = &messages[0];
    assert!(message.contains("X-Envelope-To: ada@example.com"), "{message}");
    assert!(message.contains("To: ada@example.com"), "{message}");
    assert!(message.contains(&format!("Message-ID: {message_id}")), "{message}");
    assert!(message.contains("Subject: Your order o-1 is confirmed"), "{message}");
    assert!(message.contains("multipart/alternative"), "{message}");
    assert!(message.contains("text/plain") && message.contains("text/html"), "{message}");
    assert!(message.contains("Total: 7.50 EUR"), "{message}");
    // Undo quoted-printable soft line breaks and `=` escapes before looking into the HTML.
    let unfolded = message.replace("\r\n", "\n").replace("=\n", "").replace("=3D", "=");
    assert!(unfolded.contains("Hello Ada &lt;Countess&gt; &amp; Co,</p>"), "the HTML part escapes values: {message}");

    let (status, body) = consumer.get("/v1/emails?order_id=o-unknown").await;
    assert_eq!((status, body), (200, serde_json::json!({"emails": []})));
    let (status, body) = consumer.get("/v1/emails").await;
    assert_eq!((status, body["field"].as_str()), (400, Some("order_id")));
    consumer.shutdown().await;
}

#[tokio::test]
async fn an_smtp_outage_opens_the_circuit_spends_no_attempt_and_every_email_goes_out_once_it_returns() {
    // Arrange: the shipped sender settings with a budget of one attempt, and no server.
    let port = free_port();
    let (consumer, orders) = start_email_shipped("email-outage", port, 1).await;
    let placed: Vec<Event> = (0..20).map(|i| order(&format!("out-{i}"), &[("SKU-A", 1)])).collect();
    publish(&producer(), &orders, &placed).await;

    // Act: the outage outlasts what a single attempt would have allowed.
    wait_until("the SMTP circuit to open", Duration::from_secs(60), || async {
        (circuit_state(&consumer, port).await == Some(2)).then_some(())
    })
    .await;
    // Every email waits, queued, with no attempt counted (one may be out as the probe). The
    // ones tried before the circuit opened carry the error; which ones those are depends on
    // which partitions' batches had committed by the sender's first claim.
    let tried = wait_until("an email that carries the outage's error", Duration::from_secs(60), || async {
        for i in 0..20 {
            let (_, body) = consumer.get(&format!("/v1/emails?order_id=out-{i}")).await;
            let email = body["emails"].as_array()?.first()?.clone();
            if email["last_error"].as_str().is_some_and(|s| !s.is_empty()) {
                return Some(email);
            }
        }
        None
    })
    .await;
    assert_eq!(tried["status"], "queued", "{tried}");
    for i in 0..20 {
        email_of(&consumer, &format!("out-{i}"), |e| e["status"] == "queued" && e["attempts"] == 0).await;
    }
    let sink = SmtpSink::on(port).await;

    // Assert: every email delivered once the server is back (a probe closes the circuit).
    wait_until("20 messages at the SMTP server", Duration::from_secs(90), || {
        let n = sink.messages().len();
        async move { (n >= 20).then_some(()) }
    })
    .await;
    for i in 0..20 {
        let order_id = format!("out-{i}");
        let sent = email_of(&consumer, &order_id, |e| e["status"] == "sent").await;
        assert_eq!(sent["attempts"], 1, "one attempt, the one that went through: {sent}");
    }
    assert_eq!(circuit_state(&consumer, port).await, Some(0), "the circuit closed again");
    let ids: std::collections::BTreeSet<String> = sink
        .messages()
        .iter()
        .filter_map(|m| m.lines().find(|l| l.starts_with("Message-ID: ")).map(str::to_owned))
        .collect();
    assert_eq!((sink.messages().len(), ids.len()), (20, 20), "each email once");
    consumer.shutdown().await;
}

#[tokio::test]
async fn replay_records_emails_as_suppressed_and_sends_nothing() {
    let port = free_port();
    let sink = SmtpSink::on(port).await;
    let (consumer, orders) = start_email("email-replay", port, true).await;
    publish(&producer(), &orders, &[order("o-1", &[("SKU-A", 1)]), order("o-2", &[("SKU-A", 1)])]).await;

    for order_id in ["o-1", "o-2"] {
        let email = email_of(&consumer, order_id, |e| e["status"] == "suppressed").await;
        assert_eq!(email["attempts"], 0, "the sender never claimed it: {email}");
    }
    // Stopping waits for the sender to finish its round, so anything it sent would be there.
    consumer.shutdown().await;
    assert_eq!(sink.messages(), Vec::<String>::new());
}

#[tokio::test]
async fn an_email_the_server_rejects_is_marked_failed_after_its_last_attempt() {
    // A server that answers 550 to every message: each answer uses up an attempt.
    let port = free_port();
    let rejecting = SmtpSink::rejecting(port).await;
    let (consumer, orders) = start_email_shipped("email-failed", port, 3).await;
    publish(&producer(), &orders, &[order("o-1", &[("SKU-A", 1)])]).await;

    let failed = email_of(&consumer, "o-1", |e| e["status"] == "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert!(failed["last_error"].as_str().is_some_and(|e| e.contains("550")), "{failed}");
    assert_eq!(circuit_state(&consumer, port).await, Some(0), "a rejection is no outage");
    consumer.shutdown().await;
    drop(rejecting);
}

#[tokio::test]
async fn many_orders_sent_concurrently_each_get_exactly_one_email() {
    let port = free_port();
    let sink = SmtpSink::on(port).await;
    let (consumer, orders) = start_email("email-many", port, false).await;
    let placed: Vec<Event> = (0..150).map(|i| order(&format!("m-{i}"), &[("SKU-A", 1)])).collect();
    // Every order twice (an upstream re-publish under the same event id): still one email each.
    let doubled: Vec<Event> = placed.iter().chain(placed.iter()).cloned().collect();
    publish(&producer(), &orders, &doubled).await;

    wait_until("150 messages at the SMTP server", Duration::from_secs(60), || {
        let n = sink.messages().len();
        async move { (n >= 150).then_some(()) }
    })
    .await;
    // Let anything sent twice arrive: once every email is recorded `sent`, the sender is done
    // with all of them (a message is at the server before its `sent`). Then count Message-IDs.
    for i in 0..150 {
        email_of(&consumer, &format!("m-{i}"), |e| e["status"] == "sent").await;
    }
    let messages = sink.messages();
    let mut ids: Vec<String> =
        messages.iter().filter_map(|m| m.lines().find(|l| l.starts_with("Message-ID: ")).map(str::to_owned)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((messages.len(), ids.len()), (150, 150), "one message per order, no repeats");
    let expected: std::collections::BTreeSet<String> =
        placed.iter().map(|e| format!("Message-ID: <{}@orderflow>", event_id(e))).collect();
    assert_eq!(ids.into_iter().collect::<std::collections::BTreeSet<_>>(), expected);
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_while_the_server_accepts_a_message_sends_no_second_email() {
    // Arrange: the store in a Postgres of this test's own (it is crashed below), a mail
    // server that acknowledges each message HOLD after receiving it. The sink cannot be held
    // until released, so HOLD is long: the test must crash Postgres while the server holds
    // the message, whatever the machine's speed (checked below); it stays under the sender's
    // 30 s SMTP timeout, so the exchange still ends in an acknowledgement.
    const HOLD: Duration = Duration::from_secs(20);
    let postgres = tokio::task::spawn_blocking(orderflow_testkit::postgres::PrivatePostgres::start)
        .await
        .unwrap()
        .expect("a private Postgres starts");
    let port = free_port();
    let sink = SmtpSink::slow(port, HOLD.as_secs() as u32).await;
    let orders = fresh_topic("email-pg-orders", 1).await;
    let mut args = isolated_args("email-pg", std::slice::from_ref(&orders));
    args.database.database_url = postgres.url();
    let consumer =
        start(connect(args, SenderArgs::new(&format!("smtp://127.0.0.1:{port}")).unwrap()).await.unwrap()).await;
    let placed = order("pg-1", &[("SKU-A", 1)]);
    let published = std::time::Instant::now();
    publish(&producer(), &orders, std::slice::from_ref(&placed)).await;

    // Act: while the server holds the message, crash Postgres; keep it down past the
    // acknowledgement and the pool's acquire timeout (5 s), so recording `sent` fails.
    wait_until("the message at the SMTP server", Duration::from_secs(60), || {
        let n = sink.messages().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let arrived_by = std::time::Instant::now();
    tokio::task::block_in_place(|| postgres.stop_immediate()).unwrap();
    // The message arrived after the publish, so the server acknowledges it no earlier than
    // HOLD after the publish, and no later than HOLD after the test saw it.
    assert!(
        published.elapsed() < HOLD,
        "Postgres went down {:?} after the publish, not while the server held the message",
        published.elapsed()
    );
    let acknowledged_by = arrived_by + HOLD;
    wait_until("Postgres down past the acknowledgement and the acquire timeout", Duration::from_secs(60), || {
        let now = std::time::Instant::now();
        async move { (now >= acknowledged_by + Duration::from_secs(7)).then_some(()) }
    })
    .await;
    tokio::task::block_in_place(|| postgres.start_server()).unwrap();

    // Assert: `sent` is recorded as soon as the database is back (not left `queued` until the
    // claim's 120 s lease ends and the email goes out again), and the server got one message.
    let email = email_of(&consumer, "pg-1", |e| e["status"] == "sent").await;
    assert_eq!(email["attempts"], 1, "{email}");
    assert_eq!(sink.messages().len(), 1, "exactly one message");
    consumer.shutdown().await;
}

/// The allocator's decision that `order_id` waits for `lines` ((sku, units missing)).
fn backordered(order_id: &str, lines: &[(&str, i64)]) -> Event {
    use orderflow_events::{Backorder, MissingLine, OrderId, Quantity, Sku};
    Event::OrderBackordered(Backorder {
        event_id: uuid::Uuid::new_v4(),
        order_id: OrderId::parse(order_id).unwrap(),
        caused_by: uuid::Uuid::new_v4(),
        lines: lines
            .iter()
            .map(|(sku, n)| MissingLine {
                sku: Sku::parse(*sku).unwrap(),
                quantity_missing: Quantity::parse(*n).unwrap(),
            })
            .collect(),
        decided_at: chrono::Utc::now(),
    })
}

/// The email consumer on fresh orders and allocations topics, with quick retries.
async fn start_email_with_allocations(prefix: &str, smtp_port: u16, replay: bool) -> (TestConsumer, String, String) {
    let orders = fresh_topic(&format!("{prefix}-orders"), 3).await;
    let allocations = fresh_topic(&format!("{prefix}-allocations"), 3).await;
    let mut args = isolated_args(prefix, &[orders.clone(), allocations.clone()]);
    args.replay = replay;
    let mut sender = SenderArgs::new(&format!("smtp://127.0.0.1:{smtp_port}")).unwrap();
    sender.email_retry_base_ms = 100;
    sender.email_poll_ms = 20;
    let consumer = start(connect(args, sender).await.expect("store connects")).await;
    (consumer, orders, allocations)
}

/// Wait until `order_id` has `n` emails, all with `status`; returns them, confirmation first.
async fn emails_of(consumer: &TestConsumer, order_id: &str, n: usize, status: &str) -> Vec<Value> {
    consumer
        .wait_for(
            &format!("{n} {status} emails of {order_id}"),
            &format!("/v1/emails?order_id={order_id}"),
            |_, body| {
                let emails = body["emails"].as_array()?;
                (emails.len() == n && emails.iter().all(|e| e["status"] == status)).then(|| emails.clone())
            },
        )
        .await
}

#[tokio::test]
async fn a_backordered_order_gets_one_notice_whether_the_decision_comes_before_or_after_the_order() {
    let port = free_port();
    let sink = SmtpSink::on(port).await;
    let (consumer, orders, allocations) = start_email_with_allocations("email-notice", port, false).await;
    let producer = producer();
    // o-early's decision is applied before its order; o-late's after, and decided twice.
    let early = backordered("o-early", &[("SKU-A", 2)]);
    publish(&producer, &allocations, std::slice::from_ref(&early)).await;
    publish(&producer, &orders, &[order("o-early", &[("SKU-A", 2)]), order("o-late", &[("SKU-A", 1), ("SKU-B", 1)])])
        .await;
    let late = backordered("o-late", &[("SKU-B", 1)]);
    publish(&producer, &allocations, &[late.clone(), backordered("o-late", &[("SKU-B", 1)])]).await;

    for (order_id, decision) in [("o-early", &early), ("o-late", &late)] {
        let emails = emails_of(&consumer, order_id, 2, "sent").await;
        assert_eq!((emails[0]["kind"].as_str(), emails[1]["kind"].as_str()), (Some("confirmation"), Some("backorder")));
        assert_eq!(emails[1]["to"], "ada@example.com");
        assert_eq!(emails[1]["message_id"], format!("<{}@orderflow>", decision.event_id()));
    }
    let messages = sink.messages();
    assert_eq!(messages.len(), 4, "two confirmations, two notices: {messages:#?}");
    let notice = messages.iter().find(|m| m.contains("Subject: Part of your order o-early is backordered")).unwrap();
    assert!(notice.contains("2 x SKU-A"), "{notice}");
    consumer.shutdown().await;
}

#[tokio::test]
async fn replay_records_backorder_notices_as_suppressed_and_sends_nothing() {
    let port = free_port();
    let sink = SmtpSink::on(port).await;
    let (consumer, orders, allocations) = start_email_with_allocations("email-notice-replay", port, true).await;
    let producer = producer();
    publish(&producer, &orders, &[order("o-1", &[("SKU-A", 1)])]).await;
    publish(&producer, &allocations, &[backordered("o-1", &[("SKU-A", 1)])]).await;
    emails_of(&consumer, "o-1", 2, "suppressed").await;
    consumer.shutdown().await;
    assert_eq!(sink.messages(), Vec::<String>::new());
}
