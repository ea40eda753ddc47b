//! The benchmark harness. Every figure of the pipeline is measured next to the machine's own
//! ceilings **in the same run** (these machines are shared and noisy), as the median of
//! several runs with its spread, and reported as a ratio to its ceiling beside its target.
//!
//! # Layout
//! - [`ceilings`]: raw rdkafka produce and consume rates to the same broker, raw batched
//!   upserts (with the runtime's ledger and offset writes), binary COPY, one-row commits/s.
//! - [`pipeline`]: the consumer runtime's apply rate and replay rate (a child process running
//!   a batched projection), its peak RSS and CPU per 1000 events under a backlog, codec cost.
//! - [`consumers`]: the same figures for each registered consumer binary (`crates/registry`)
//!   over orders and stock changes.
//! - [`ingress`]: the real `ingress` binary's maximum requests/s (closed loop) against raw
//!   produce, and its latency under an open loop at half that rate.
//! - [`e2e`]: ingress + the real `fulfillment` binary: the maximum sustainable rate, latency
//!   from the scheduled POST to the row's visibility at 50% and 80% of it, RSS and CPU.
//! - [`allocation`] (its own subcommand): the allocator's decisions/s on one hot sku and over
//!   10,000 skus beside the synthetic consumer's apply rate, and the latency from an order's
//!   202 to its decision event at half load.
//! - [`report`]: the markdown written between the markers in `docs/benchmarks.md`.
//!
//! `scripts/bench` builds in release mode and runs it; `--quick` is the smoke mode CI runs
//! (through `tests/smoke.rs`) to keep the harness working. Timed assertions live nowhere:
//! figures are reported, never asserted.

pub mod allocation;
pub mod ceilings;
pub mod child;
pub mod consumers;
pub mod e2e;
pub mod ingress;
pub mod pipeline;
pub mod plots;
pub mod report;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use orderflow_kafka::KafkaArgs;
use orderflow_service::DatabaseArgs;

#[derive(Debug, Parser)]
#[command(name = "orderflow-bench", about = "Measure orderflow against the machine's own ceilings")]
pub struct Cli {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every benchmark and write the report.
    Run(Settings),
    /// Measure the allocator (decisions/s under contention, 202 → decision latency) and write
    /// its section of the report.
    Allocation(Settings),
    /// Internal: the consumer process the harness measures (a batched projection on the runtime).
    ConsumeChild(child::ChildArgs),
    /// Internal: the bare HTTP server of the ingress ceiling: the ingress's server stack (tokio,
    /// hyper, axum) with a trivial handler that reads the body and answers 202.
    BareHttp {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Fill a topic with distinct OrderPlaced events (for profiling a consumer by hand).
    Fill {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 100_000)]
        records: usize,
    },
    /// Apply a filled topic with the synthetic consumer, then with the Python peer, and print
    /// each one's rate and CPU per 1000 events (for tuning the runtime's cost by hand:
    /// `fill` once, then `apply` after each change).
    Apply {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 100_000)]
        records: usize,
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Processes of the synthetic consumer on one group.
        #[arg(long, default_value_t = 1)]
        instances: usize,
        /// Leave the peer out.
        #[arg(long)]
        no_peer: bool,
    },
}

/// What to measure and how much.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Repetitions of each figure (the report shows the median and the spread).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Records per throughput measurement.
    #[arg(long, default_value_t = 100_000)]
    pub records: usize,
    /// Backlog for the memory figure (target: peak RSS < 150 MB under one million).
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// Batch size of the consumer and of the raw upsert ceiling.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Seconds of each ingress / end-to-end open loop (each closed loop takes half).
    #[arg(long, default_value_t = 20)]
    pub load_secs: u64,
    /// Smoke mode: tiny sizes, one run (CI keeps the harness working with it).
    #[arg(long)]
    pub quick: bool,
    /// Write the report into this markdown file, between its bench markers, and its pictures
    /// into `img/` beside it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The command line to print in the report.
    #[arg(long, default_value = "scripts/bench")]
    pub command_line: String,
}

impl Settings {
    pub fn quick() -> Settings {
        Settings {
            runs: 1,
            records: 2_000,
            backlog: 5_000,
            batch_size: 200,
            load_secs: 2,
            quick: true,
            out: None,
            command_line: "orderflow-bench run --quick".into(),
        }
    }

    fn effective(mut self) -> Settings {
        if self.quick {
            let out = self.out.take();
            self = Settings { out, command_line: self.command_line.clone(), ..Settings::quick() };
        }
        self
    }
}

/// Everything one harness run needs to reach the broker and the database.
#[derive(Debug, Clone)]
pub struct Env {
    pub kafka: KafkaArgs,
    pub database_url: String,
}

pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let env = Env { kafka: cli.kafka, database_url: cli.database.database_url };
    match cli.command {
        Command::Run(settings) => {
            let settings = settings.effective();
            let figures = run(&env, &settings).await?;
            let markdown = report::render(&settings, &figures, &env).await;
            match &settings.out {
                Some(path) => {
                    let img = path.parent().unwrap_or(std::path::Path::new(".")).join("img");
                    for picture in plots::draw(&img, &figures)? {
                        eprintln!("drew {}", picture.display());
                    }
                    report::write_section(path, report::PIPELINE_SECTION, &markdown)?;
                    eprintln!("wrote {}", path.display());
                }
                None => println!("{markdown}"),
            }
            Ok(())
        }
        Command::Allocation(settings) => {
            let settings = settings.effective();
            let mut figures = report::Figures::default();
            for round in 0..settings.runs {
                tracing::info!(round, "allocation benchmark round");
                figures.push_allocation(&allocation::measure(&env, &settings).await?);
            }
            let markdown = report::render_allocation(&settings, &figures, &env).await;
            match &settings.out {
                Some(path) => {
                    report::write_section(path, report::ALLOCATION_SECTION, &markdown)?;
                    eprintln!("wrote {}", path.display());
                }
                None => println!("{markdown}"),
            }
            Ok(())
        }
        Command::ConsumeChild(args) => child::run(&env, args).await,
        Command::BareHttp { listen } => ingress::serve_bare(listen).await,
        Command::Fill { topic, records } => {
            ceilings::create_topic(&env, &topic).await?;
            let rate = ceilings::fill_orders(&env, &topic, records).await?;
            eprintln!("{records} records to {topic} at {rate:.0}/s");
            Ok(())
        }
        Command::Apply { topic, records, batch_size, instances, no_peer } => {
            let runtime =
                pipeline::run_bench_instances(&env, &topic, records, batch_size, false, instances, true).await?;
            println!("runtime {}", runtime.summary());
            if !no_peer {
                let peer = pipeline::run_peer(&env, &topic, records).await?;
                println!("peer    {}", peer.summary());
                println!("runtime / peer = {:.2}x", runtime.per_sec / peer.per_sec);
            }
            Ok(())
        }
    }
}

/// Measure everything `settings.runs` times.
pub async fn run(env: &Env, settings: &Settings) -> anyhow::Result<report::Figures> {
    let mut figures = report::Figures::default();
    let workload = consumers::Workload::fill(env, settings).await?;
    for round in 0..settings.runs {
        tracing::info!(round, "benchmark round");
        let ceil = ceilings::measure(env, settings).await?;
        let pipe = pipeline::measure(env, settings, &ceil.topic, round == 0).await?;
        let consumers = consumers::measure(env, settings, &workload, &ceil.topic).await?;
        let ingress = ingress::measure(env, settings).await?;
        let e2e = e2e::measure(env, settings, &ingress).await?;
        figures.push_ceilings(&ceil);
        figures.push_pipeline(&pipe);
        figures.push_consumers(&consumers);
        figures.push_ingress(&ingress);
        figures.push_e2e(&e2e);
    }
    Ok(figures)
}
