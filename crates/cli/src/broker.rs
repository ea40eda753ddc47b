use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::StreamExt;
use orderflow_kafka::KafkaArgs;
use orderflow_kafka::admin::{ensure_topic, wait_for_broker};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Wait until the brokers answer Metadata.
    ///
    /// Example: orderflow broker wait --timeout 30
    Wait {
        /// Seconds to wait before giving up.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Produce records with the project's producer settings (acks=all, idempotence, lz4)
    /// to a scratch topic and read them back in a fresh consumer group.
    ///
    /// Example: orderflow broker check --records 10000
    Check {
        /// How many records to send.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        records: u32,
        /// Scratch topic (created if missing).
        #[arg(long, default_value = "orderflow.broker-check")]
        topic: String,
        /// Seconds to wait for the records to come back.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

pub async fn run(kafka: &KafkaArgs, command: BrokerCommand) -> anyhow::Result<()> {
    match command {
        BrokerCommand::Wait { timeout } => {
            let info = wait_for_broker(kafka, Duration::from_secs(timeout)).await?;
            println!("brokers {} answer; {} topics", info.brokers.join(","), info.topics.len());
            Ok(())
        }
        BrokerCommand::Check { records, topic, timeout } => {
            check(kafka, &topic, records, Duration::from_secs(timeout)).await
        }
    }
}

async fn check(kafka: &KafkaArgs, topic: &str, records: u32, timeout: Duration) -> anyhow::Result<()> {
    ensure_topic(kafka, topic, 3, orderflow_kafka::admin::CLUSTER_DEFAULT_REPLICATION).await?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let run_id = format!("{}-{nanos}", std::process::id());
    let producer: FutureProducer = kafka.producer_config().create().context("Failed to create producer")?;

    let started = Instant::now();
    let sends = futures::stream::iter(0..records)
        .map(|i| {
            let producer = &producer;
            let key = format!("key-{}", i % 64);
            let payload = format!("{run_id}:{i}");
            async move {
                producer
                    .send(FutureRecord::to(topic).key(&key).payload(&payload), Duration::from_secs(30))
                    .await
                    .map_err(|(error, _)| error)
            }
        })
        .buffer_unordered(10_000);
    let acked: Vec<_> = sends.collect().await;
    let produce_secs = started.elapsed().as_secs_f64();
    if let Some(error) = acked.iter().find_map(|r| r.as_ref().err()) {
        bail!("broker {} rejected a record on {topic}: {error}", kafka.brokers);
    }

    let group = format!("orderflow-broker-check-{run_id}");
    let consumer: StreamConsumer = kafka.consumer_config(&group).create().context("Failed to create consumer")?;
    consumer.subscribe(&[topic]).with_context(|| format!("subscribe to {topic}"))?;
    let mut seen = HashSet::new();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = consumer.stream();
    while seen.len() < records as usize {
        let message = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(message)) => message.with_context(|| format!("Failed to read {topic}"))?,
            Ok(None) => break,
            Err(_) => bail!(
                "only {} of {records} records came back from {topic} within {timeout:?} (group {group})",
                seen.len()
            ),
        };
        if let Some(payload) = message.payload_view::<str>().and_then(Result::ok)
            && let Some((id, i)) = payload.split_once(':')
            && id == run_id
        {
            seen.insert(i.to_owned());
        }
    }
    let consume_secs = started.elapsed().as_secs_f64();
    println!(
        "ok: {records} records to {topic} on {} (produce {:.0}/s, consume {:.0}/s)",
        kafka.brokers,
        records as f64 / produce_secs,
        records as f64 / consume_secs
    );
    Ok(())
}
