//! `orderflow replay <consumer>`: rebuild a consumer's read store from the topics into a
//! shadow schema (`<schema>_shadow`), compare it with the live store, and optionally promote
//! it.
//!
//! The rebuild is the consumer's own [`Handler`] run by the real runtime with
//! `replay = true` (no side effects), a fresh consumer group and an empty shadow schema, until
//! its stored offsets reach the high watermarks captured at the start. The report gives each
//! table's row count and checksum (`md5` of the sorted row texts) in both schemas and a
//! sample of rows only one side has. `--promote` then swaps the schemas in one transaction
//! (live → `<schema>_old`, shadow → live): the promoted schema carries the offsets where the
//! rebuild ended, so the consumer, started again, continues there with no gap and no double
//! count. Promotion refuses while the consumer runs.
//!
//! Consumers are looked up in the registry (`crates/registry`, `orderflow consumers`), which
//! says how to run each one's handler alone.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use orderflow_consumer_kit::{Bare, LocalBoxFuture, bare_with};
use orderflow_kafka::KafkaArgs;
use orderflow_runtime::{CancellationToken, Handler, RuntimeArgs, store};
use sqlx::PgPool;

use crate::position::{self, ConsumerArgs, ConsumerRef};
use crate::records;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  orderflow replay fulfillment                        rebuild into fulfillment_shadow and compare
  orderflow replay fulfillment --promote              ... and swap it in (stop the consumer first)
  orderflow replay analytics --topic orders.v1 --topic inventory.v1 --schema analytics

Known consumers: `orderflow consumers` (email replays record confirmations as `suppressed`,
never sent).")]
pub struct ReplayArgs {
    /// The consumer; the shadow schema is `<schema>_shadow`.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    /// Topics to rebuild from (repeatable; default: the consumer's topics).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Swap the rebuilt store in when the rebuild is done (the live one is kept as `<schema>_old`).
    /// Only for a rebuild from the beginning: a partial store never replaces the live one.
    #[arg(long, conflicts_with_all = ["since", "from_offset"])]
    pub promote: bool,
    /// Rebuild only from records at or after this time (RFC 3339), in every partition: a
    /// shadow store of the data since then, to study or compare; it cannot be promoted.
    #[arg(long, value_name = "RFC3339", value_parser = records::parse_time, conflicts_with = "from_offset")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Rebuild only from this offset on, in every partition (clamped to what the broker holds).
    #[arg(long, value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..))]
    pub from_offset: Option<i64>,
    /// Differing rows to show per table.
    #[arg(long, default_value_t = 5)]
    pub sample: i64,
    /// Give up when the rebuild makes no progress for this many seconds.
    #[arg(long, default_value_t = 120)]
    pub stall_timeout: u64,
}

/// One table in both schemas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableDiff {
    pub table: String,
    pub live_rows: i64,
    pub shadow_rows: i64,
    pub live_md5: String,
    pub shadow_md5: String,
    /// Rows only the live store has (a sample).
    pub only_live: Vec<String>,
    /// Rows only the rebuilt store has (a sample).
    pub only_shadow: Vec<String>,
}

impl TableDiff {
    pub fn equal(&self) -> bool {
        self.live_rows == self.shadow_rows && self.live_md5 == self.shadow_md5
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub shadow_schema: String,
    pub records_replayed: i64,
    pub tables: Vec<TableDiff>,
    pub promoted: bool,
}

/// Replay the registered consumer `args` names (`orderflow consumers`), with its handler
/// alone (for email: confirmations are recorded `suppressed` and nothing is sent).
pub async fn registry(kafka: &KafkaArgs, args: &ReplayArgs) -> anyhow::Result<ReplayReport> {
    let spec = orderflow_registry::get(&args.consumer.consumer).context("orderflow replay")?;
    replay_with(spec.topic_list(), spec.rebuild, kafka, args).await
}

pub async fn run(kafka: &KafkaArgs, args: ReplayArgs) -> anyhow::Result<()> {
    let report = registry(kafka, &args).await?;
    for t in &report.tables {
        let verdict = if t.equal() { "equal" } else { "DIFFERENT" };
        println!(
            "{}\t{verdict}\tlive {} rows md5 {}\tshadow {} rows md5 {}",
            t.table, t.live_rows, t.live_md5, t.shadow_rows, t.shadow_md5
        );
        for row in &t.only_live {
            println!("  only live:   {row}");
        }
        for row in &t.only_shadow {
            println!("  only shadow: {row}");
        }
    }
    let different = report.tables.iter().filter(|t| !t.equal()).count();
    eprintln!(
        "replay {}: {} records into {}; {} tables, {different} different{}",
        args.consumer.consumer,
        report.records_replayed,
        report.shadow_schema,
        report.tables.len(),
        if report.promoted { "; promoted" } else { "" }
    );
    Ok(())
}

/// Rebuild `handler`'s store into `<schema>_shadow`, report the difference from the live
/// store, and promote it when asked.
pub async fn replay<H: Handler>(handler: H, kafka: &KafkaArgs, args: &ReplayArgs) -> anyhow::Result<ReplayReport> {
    let topics = handler.topics();
    replay_with(topics, |runtime_args| bare_with(handler, runtime_args), kafka, args).await
}

/// [`replay`] of the handler `connect` runs alone, reading `default_topics` unless `--topic`
/// names others.
async fn replay_with(
    default_topics: Vec<String>,
    connect: impl FnOnce(RuntimeArgs) -> LocalBoxFuture<anyhow::Result<Bare>>,
    kafka: &KafkaArgs,
    args: &ReplayArgs,
) -> anyhow::Result<ReplayReport> {
    let live = args.consumer.consumer_ref()?;
    let shadow = format!("{}_shadow", live.schema);
    store::validate_schema_name(&shadow)?;
    let topics = if args.topics.is_empty() { default_topics } else { args.topics.clone() };
    anyhow::ensure!(!topics.is_empty(), "consumer {} reads no topics; name them with --topic", live.name);
    let pool = position::connect(&args.consumer.db).await?;

    // An empty shadow, and the end of the rebuild: the high watermarks now.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {shadow} CASCADE"))
        .execute(&pool)
        .await
        .with_context(|| format!("Failed to drop the old shadow schema {shadow}"))?;
    let reader = records::reader(kafka)?;
    anyhow::ensure!(
        !(args.promote && (args.since.is_some() || args.from_offset.is_some())),
        "--promote needs a rebuild from the beginning; a store rebuilt from a point is partial"
    );
    let mut ends = BTreeMap::new();
    let mut lows = BTreeMap::new();
    for topic in &topics {
        for partition in records::partitions(&reader, topic)? {
            let (low, high) = records::watermarks(&reader, topic, partition)?;
            if high > low {
                ends.insert((topic.clone(), partition), high);
                lows.insert((topic.clone(), partition), low);
            }
        }
    }
    // Where each partition starts: the beginning, or the given point. The runtime starts a
    // partition at its stored offset, so a start point is a row in the shadow's offsets.
    let mut starts = BTreeMap::new();
    for (tp, &high) in &ends {
        let low = lows[tp];
        let start = match (args.since, args.from_offset) {
            (Some(since), _) => records::offset_for_time(&reader, &tp.0, tp.1, since, (low, high))
                .await
                .with_context(|| format!("Failed to find the offset of {since} in {}[{}]", tp.0, tp.1))?,
            (None, Some(offset)) => offset.clamp(low, high),
            (None, None) => continue,
        };
        starts.insert(tp.clone(), start);
    }
    // Offsets below these were not replayed (before the start point, or gone from the broker).
    let base: i64 = ends.keys().map(|tp| starts.get(tp).copied().unwrap_or(lows[tp])).sum();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut runtime_args = RuntimeArgs::new(kafka.clone(), args.consumer.db.database_url.clone());
    runtime_args.schema = Some(shadow.clone());
    runtime_args.group = Some(format!("{}-replay-{nanos:x}", live.name));
    runtime_args.topics = topics.clone();
    runtime_args.dlq_topic = Some(format!("{}.replay.dlq", live.name));
    runtime_args.replay = true;
    let Bare { pool: shadow_pool, serve, .. } = connect(runtime_args).await?;
    store::seed_offsets(&shadow_pool, &shadow, &starts)
        .await
        .with_context(|| format!("Failed to set the start points in {shadow}"))?;
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.context("Failed to bind the replay's health port")?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, Box::pin(stop.clone().cancelled_owned())));

    let total: i64 = ends.values().sum();
    let bar = records::progress(Some(total as u64), &format!("rebuilding {shadow}"));
    let caught_up =
        wait_caught_up(&shadow_pool, &shadow, &ends, Duration::from_secs(args.stall_timeout), &bar, &task).await;
    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(60), task).await;
    bar.finish_and_clear();
    let replayed = caught_up?;
    match stopped {
        Ok(Ok(result)) => result.context("the replay runtime failed")?,
        Ok(Err(_)) => bail!("the replay runtime panicked"),
        Err(_) => bail!("the replay runtime did not stop within 60s"),
    }
    shadow_pool.close().await;

    let tables = diff(&pool, &live.schema, &shadow, args.sample).await?;
    let mut report =
        ReplayReport { shadow_schema: shadow.clone(), records_replayed: replayed - base, tables, promoted: false };
    if args.promote {
        promote(kafka, &pool, &live, &shadow).await?;
        report.promoted = true;
    }
    Ok(report)
}

/// Wait until the shadow's stored offsets reach `ends`; fails after `stall` without progress.
async fn wait_caught_up(
    pool: &PgPool,
    shadow: &str,
    ends: &BTreeMap<(String, i32), i64>,
    stall: Duration,
    bar: &indicatif::ProgressBar,
    task: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<i64> {
    let mut last = -1;
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let stored = store::stored_offsets(pool, shadow)
            .await
            .context("Failed to read the shadow's offsets")?
            .unwrap_or_default();
        let done: i64 = ends.iter().map(|(tp, end)| stored.get(tp).copied().unwrap_or(0).min(*end)).sum();
        bar.set_position(done as u64);
        if ends.iter().all(|(tp, end)| stored.get(tp).is_some_and(|o| o >= end)) {
            return Ok(done);
        }
        if task.is_finished() {
            bail!("the replay runtime stopped before catching up ({done} records applied)");
        }
        if done > last {
            last = done;
            last_progress = tokio::time::Instant::now();
        } else if last_progress.elapsed() > stall {
            bail!("the rebuild made no progress for {stall:?} ({done} records applied; waiting for {ends:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tables (not the runtime's own, [`store::RUNTIME_TABLES`]) of the live and shadow schemas,
/// compared.
pub async fn diff(pool: &PgPool, live: &str, shadow: &str, sample: i64) -> anyhow::Result<Vec<TableDiff>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT table_name::text FROM information_schema.tables
         WHERE table_schema IN ($1, $2) AND table_type = 'BASE TABLE' AND NOT table_name::text = ANY($3)
         ORDER BY 1",
    )
    .bind(live)
    .bind(shadow)
    .bind(store::RUNTIME_TABLES.as_slice())
    .fetch_all(pool)
    .await
    .context("Failed to list the stores' tables")?;
    let mut out = Vec::new();
    for table in tables {
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let summary = |schema: &str| {
            let sql = format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {schema}.{quoted} t"
            );
            let pool = pool.clone();
            async move { sqlx::query_as::<_, (i64, String)>(&sql).fetch_one(&pool).await.unwrap_or((0, "missing".into())) }
        };
        let (live_rows, live_md5) = summary(live).await;
        let (shadow_rows, shadow_md5) = summary(shadow).await;
        let only = |a: &str, b: &str| {
            let sql = format!(
                "SELECT t::text FROM {a}.{quoted} t EXCEPT ALL SELECT t::text FROM {b}.{quoted} t ORDER BY 1 LIMIT $1"
            );
            let pool = pool.clone();
            async move { sqlx::query_scalar::<_, String>(&sql).bind(sample).fetch_all(&pool).await.unwrap_or_default() }
        };
        let (only_live, only_shadow) = if live_md5 == shadow_md5 {
            (vec![], vec![])
        } else {
            (only(live, shadow).await, only(shadow, live).await)
        };
        out.push(TableDiff { table, live_rows, shadow_rows, live_md5, shadow_md5, only_live, only_shadow });
    }
    Ok(out)
}

/// Swap the shadow in: live → `<schema>_old` (replacing an older one), shadow → live, in one
/// transaction. Refuses while the consumer runs.
pub async fn promote(kafka: &KafkaArgs, pool: &PgPool, live: &ConsumerRef, shadow: &str) -> anyhow::Result<()> {
    let running = position::running_instances(kafka, pool, live).await?;
    anyhow::ensure!(
        running.is_empty(),
        "consumer {} is running ({}); stop it before promoting {shadow}",
        live.name,
        running.join(", ")
    );
    let schema = &live.schema;
    let old = format!("{schema}_old");
    store::validate_schema_name(&old)?;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {old} CASCADE"))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("Failed to drop {old}"))?;
    sqlx::query(&format!("ALTER SCHEMA {schema} RENAME TO {old}"))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("Failed to rename {schema} to {old}"))?;
    sqlx::query(&format!("ALTER SCHEMA {shadow} RENAME TO {schema}"))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("Failed to rename {shadow} to {schema}"))?;
    tx.commit().await.with_context(|| format!("Failed to promote {shadow} to {schema}"))?;
    Ok(())
}
