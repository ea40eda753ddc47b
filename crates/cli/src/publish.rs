//! `orderflow publish FILE`: publish events from a JSON Lines file, one event per line, in
//! the same JSON as the HTTP API.
//!
//! # Line format
//! Each non-blank line is one JSON object: an order (the body of `POST /v1/orders`) or one
//! stock change (one element of `changes` in `POST /v1/inventory/changes`). A line says what
//! it is with `"type": "order"` or `"type": "inventory_change"`; without `type` it is an
//! order if it has `lines`, and a stock change if it has `delta`. Lines starting with `#`
//! are comments.
//!
//! # Ids and re-runs
//! Event ids are derived like the ingress's `Idempotency-Key` ids: from `--idempotency-key`
//! (default: a hash of the file's content) and the line number. Publishing the same file
//! again publishes the same ids, which consumers apply once.
//!
//! # Errors
//! Every rejected line is reported (line number, field, problem) and never stops the good
//! lines; the command exits non-zero if any line was rejected or not acknowledged.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use orderflow_events::{
    Codec, Event, FieldError, INVENTORY_TOPIC, InventoryChangeRequest, ORDERS_TOPIC, OrderRequest, idempotent_event_id,
};
use orderflow_kafka::KafkaArgs;
use orderflow_publisher::Publisher;
use serde_json::Value;

/// Largest file accepted (it is read whole to derive the default idempotency key).
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Largest line accepted.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Events in flight at once.
const CHUNK: usize = 2000;

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// JSON Lines file of events (`-` for stdin).
    pub file: PathBuf,
    /// Scope of the derived event ids (default: a hash of the file's content).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Schema Registry URL; unset: Avro single-object encoding.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    #[arg(long, default_value = ORDERS_TOPIC)]
    pub orders_topic: String,
    #[arg(long, default_value = INVENTORY_TOPIC)]
    pub inventory_topic: String,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One line that was not published because it is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub line: usize,
    pub errors: Vec<FieldError>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub published: usize,
    pub rejected: Vec<Rejected>,
    /// Valid lines the broker did not acknowledge: (line, error).
    pub failed: Vec<(usize, String)>,
}

pub async fn run(kafka: &KafkaArgs, args: PublishArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let summary = publish_file(kafka, &args).await?;
    eprintln!(
        "published {} event(s), rejected {} line(s), failed {} in {:.1?}",
        summary.published,
        summary.rejected.len(),
        summary.failed.len(),
        started.elapsed()
    );
    for rejected in &summary.rejected {
        for error in &rejected.errors {
            eprintln!("  line {}: {}: {}", rejected.line, error.field, error.problem);
        }
    }
    for (line, error) in &summary.failed {
        eprintln!("  line {line}: not published: {error}");
    }
    if !summary.rejected.is_empty() || !summary.failed.is_empty() {
        bail!("{} line(s) rejected, {} not published", summary.rejected.len(), summary.failed.len());
    }
    Ok(())
}

/// Publish every valid line of `args.file`; report the others.
pub async fn publish_file(kafka: &KafkaArgs, args: &PublishArgs) -> anyhow::Result<Summary> {
    let text = read_input(&args.file)?;
    let scope_key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v5(&orderflow_events::EVENT_ID_NAMESPACE, text.as_bytes()).to_string());
    let codec = Codec::from_config(args.schema_registry_url.as_deref()).context("Failed to configure the codec")?;
    let publisher = Publisher::new(kafka, codec, "orderflow/cli-publish")
        .context("Failed to create the Kafka producer")?
        .with_topics(&args.orders_topic, &args.inventory_topic);

    let mut summary = Summary::default();
    let mut valid: Vec<(usize, Event)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_line(trimmed, idempotent_event_id("orderflow-publish", &scope_key, number)) {
            Ok(event) => valid.push((number, event)),
            Err(errors) => summary.rejected.push(Rejected { line: number, errors }),
        }
    }

    let progress = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(valid.len() as u64).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    };
    for chunk in valid.chunks(CHUNK) {
        let events: Vec<Event> = chunk.iter().map(|(_, e)| e.clone()).collect();
        for ((line, _), outcome) in chunk.iter().zip(publisher.publish_all(&events, None).await) {
            match outcome {
                Ok(_) => summary.published += 1,
                Err(e) => summary.failed.push((*line, e.to_string())),
            }
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(summary)
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("Failed to open {}", path.display()))?)
    };
    reader
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("Failed to read {} (must be UTF-8 text)", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        bail!("{} is larger than {MAX_FILE_BYTES} bytes; split it", path.display());
    }
    Ok(text)
}

/// One line → one event, or every problem with it.
pub fn parse_line(line: &str, event_id: uuid::Uuid) -> Result<Event, Vec<FieldError>> {
    let problem = |field: &str, problem: String| vec![FieldError { field: field.to_owned(), problem }];
    if line.len() > MAX_LINE_BYTES {
        return Err(problem("line", format!("longer than {MAX_LINE_BYTES} bytes")));
    }
    let mut value: Value = serde_json::from_str(line).map_err(|e| problem("line", format!("malformed JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(problem("line", "must be a JSON object".to_owned()));
    };
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => {
            return Err(problem("type", "must be \"order\" or \"inventory_change\"".to_owned()));
        }
        None if object.contains_key("lines") => "order".to_owned(),
        None if object.contains_key("delta") => "inventory_change".to_owned(),
        None => {
            return Err(problem("type", "missing, and the line has neither `lines` nor `delta`".to_owned()));
        }
    };
    let now = chrono::Utc::now();
    match kind.as_str() {
        "order" => {
            let request: OrderRequest = from_value(value)?;
            request.into_event(event_id, now).map(Event::OrderPlaced)
        }
        "inventory_change" => {
            let request: InventoryChangeRequest = from_value(value)?;
            request.into_event_at("", event_id, now).map(Event::InventoryChanged)
        }
        other => Err(problem("type", format!("unknown type {other:?}; expected \"order\" or \"inventory_change\""))),
    }
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        vec![FieldError {
            field: if path == "." { "line".to_owned() } else { path },
            problem: e.into_inner().to_string(),
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_typed_explicitly_or_by_their_fields() {
        let id = uuid::Uuid::new_v4();
        let change = r#"{"sku": "a", "warehouse": "w", "delta": 3, "reason": "received"}"#;
        assert!(matches!(parse_line(change, id), Ok(Event::InventoryChanged(_))));
        let typed = r#"{"type": "inventory_change", "sku": "a", "warehouse": "w", "delta": 3, "reason": "received"}"#;
        assert!(matches!(parse_line(typed, id), Ok(Event::InventoryChanged(_))));
        let errors = parse_line(r#"{"type": "refund"}"#, id).unwrap_err();
        assert_eq!(errors[0].field, "type");
        let errors = parse_line(r#"{"sku": "a"}"#, id).unwrap_err();
        assert!(errors[0].problem.contains("neither"), "{errors:?}");
    }

    #[test]
    fn every_problem_of_a_line_names_its_field() {
        let id = uuid::Uuid::new_v4();
        let errors = parse_line(r#"{"sku": "a b", "delta": 3, "reason": "stolen"}"#, id).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"sku") && fields.contains(&"reason") && fields.contains(&"warehouse"), "{errors:?}");
        let errors = parse_line(r#"{"delta": "three"}"#, id).unwrap_err();
        assert_eq!(errors[0].field, "delta");
        assert_eq!(parse_line("[1]", id).unwrap_err()[0].field, "line");
        assert!(parse_line("{", id).unwrap_err()[0].problem.contains("malformed"));
    }
}
