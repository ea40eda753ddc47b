//! The pipeline's own figures: consumer apply rate and replay rate (child process), peak RSS
//! and CPU per 1000 events under a backlog, codec cost per event.

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use orderflow_events::{Codec, Event, samples};
use orderflow_runtime::store;
use sqlx::PgPool;

use crate::ceilings::{self, unique};
use crate::{Env, Settings};

#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub apply_per_sec: f64,
    /// The Python peer's apply rate over the same topic ([`run_peer`]).
    pub peer_per_sec: f64,
    /// Where the machine's CPU went while the peer applied (its whole run).
    pub peer_split: CpuSplit,
    pub replay_per_sec: f64,
    pub apply_cpu_ms_per_1000: f64,
    /// Where the machine's CPU went while the consumer applied (timed window only).
    pub apply_split: CpuSplit,
    /// Two processes of the synthetic consumer on one group: their combined rate and where
    /// the machine's CPU went.
    pub two_per_sec: f64,
    pub two_split: CpuSplit,
    pub backlog_events: usize,
    pub backlog_peak_rss_mb: f64,
    pub backlog_apply_per_sec: f64,
    /// The ledger after the backlog, and pruning all of it.
    pub backlog_ledger: LedgerFigures,
    pub encode_order_ns: f64,
    pub decode_order_ns: f64,
    pub encode_inventory_ns: f64,
    pub decode_inventory_ns: f64,
}

/// A consumer child process and what it cost.
pub(crate) struct Measured {
    pub per_sec: f64,
    /// The highest peak RSS of its processes.
    pub peak_rss_mb: f64,
    /// CPU seconds of all its processes.
    pub cpu_seconds: f64,
    pub split: CpuSplit,
    /// The runtime's ledger after the run (runtime consumers only).
    pub ledger: Option<LedgerFigures>,
}

/// What the runtime's ledger held after a run, and what pruning it cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgerFigures {
    pub rows: u64,
    pub mb: f64,
    pub pruned: u64,
    pub prune_secs: f64,
}

impl Measured {
    /// One line for `orderflow-bench apply`.
    pub(crate) fn summary(&self) -> String {
        let s = &self.split;
        format!(
            "{:>8.0} events/s  peak RSS {:.0} MB  CPU ms per 1000 events: consumer {:.1}, postgres {:.1}, broker {:.1}, \
             other {:.1} ({:.2} cores busy)",
            self.per_sec, self.peak_rss_mb, s.consumer, s.postgres, s.broker, s.other, s.busy_cores
        ) + &self
            .ledger
            .map(|l| format!("; ledger {} rows, {:.1} MB, pruned in {:.2} s", l.rows, l.mb, l.prune_secs))
            .unwrap_or_default()
    }
}

/// CPU milliseconds per 1000 events applied, by process, over the timed window of a consumer
/// run: the broker (local Apache Kafka nodes, see [`is_kafka_broker`]; 0 when the broker runs
/// elsewhere), every
/// PostgreSQL process (exited backends included), the consumer, and everything else on the
/// machine; `busy_cores` is how many of the machine's cores were busy on average.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub broker: f64,
    pub postgres: f64,
    pub consumer: f64,
    pub other: f64,
    pub busy_cores: f64,
}

impl CpuSplit {
    /// The split of the machine's CPU between two [`machine_ticks`] readings, given the
    /// measured consumer's own CPU seconds over that time, `events` applied, in `elapsed`
    /// seconds.
    fn between(start: (f64, f64, f64), end: (f64, f64, f64), consumer: f64, events: f64, elapsed: f64) -> CpuSplit {
        let tck = clock_ticks();
        let per_1000 = 1000.0 * 1000.0 / events.max(1.0); // seconds -> ms per 1000 events
        let (broker, postgres, busy) = ((end.0 - start.0) / tck, (end.1 - start.1) / tck, (end.2 - start.2) / tck);
        CpuSplit {
            broker: broker * per_1000,
            postgres: postgres * per_1000,
            consumer: consumer * per_1000,
            other: (busy - broker - postgres - consumer).max(0.0) * per_1000,
            busy_cores: busy / elapsed,
        }
    }
}

/// Whether the process at `/proc/<pid>` is a Kafka broker: a JVM running `kafka.Kafka`.
fn is_kafka_broker(proc_dir: &std::path::Path) -> bool {
    std::fs::read(proc_dir.join("cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == b"kafka.Kafka"))
}

/// The local broker's name and version, read off the running `kafka.Kafka` processes: the
/// `kafka_2.13-<version>.jar` in their class path, and how many nodes run. `None` when no
/// broker runs on this machine (a remote `KAFKA_BROKERS`).
pub fn local_broker() -> Option<String> {
    let mut nodes = 0;
    let mut version = None;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        if !is_kafka_broker(&path) {
            continue;
        }
        nodes += 1;
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let classpath = args.iter().position(|a| a == "-cp" || a == "-classpath").and_then(|i| args.get(i + 1));
        for dir in classpath.into_iter().flat_map(|cp| cp.split(':')).map(|e| e.trim_end_matches('*')) {
            for jar in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = jar.file_name().to_string_lossy().into_owned();
                if let Some(v) = name.strip_prefix("kafka_2.13-").and_then(|n| n.strip_suffix(".jar")) {
                    version = Some(v.to_owned());
                }
            }
        }
    }
    (nodes > 0).then(|| {
        format!(
            "Apache Kafka {} ({nodes} node{}, KRaft)",
            version.as_deref().unwrap_or("(version unknown)"),
            if nodes == 1 { "" } else { "s" }
        )
    })
}

/// CPU ticks so far: (broker, postgres, machine busy), read from /proc.
pub(crate) fn machine_ticks() -> (f64, f64, f64) {
    let (mut broker, mut postgres) = (0.0, 0.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        // Fields after ") ": state=0, ppid=1, ... utime=11, stime=12, cutime=13, cstime=14.
        let own = stat_field(&stat, 11) + stat_field(&stat, 12);
        match comm.trim() {
            "java" if is_kafka_broker(&path) => broker += own,
            // The postmaster's cutime/cstime hold the CPU of backends that have exited.
            "postgres" => postgres += own + stat_field(&stat, 13) + stat_field(&stat, 14),
            _ => {}
        }
    }
    let busy = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .map(|cpu| {
            let v: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
            v.iter().take(8).sum::<f64>() - v.get(3).copied().unwrap_or(0.0) - v.get(4).copied().unwrap_or(0.0)
        })
        .unwrap_or(0.0);
    (broker, postgres, busy)
}

/// Field `i` of a `/proc/<pid>/stat` line, counted from the state after the command name
/// (which may hold spaces, hence the split at the last ") "): utime is 11, stime 12.
fn stat_field(stat: &str, i: usize) -> f64 {
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// Clock ticks per second, asked of `getconf` once (the harness reads `/proc` every 20 ms).
pub(crate) fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (peak RSS in MB, CPU seconds so far) of process `pid`.
pub(crate) fn proc_stats(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    (hwm_kb / 1024.0, (stat_field(&stat, 11) + stat_field(&stat, 12)) / clock_ticks())
}

/// Run the benchmark consumer over `topic` (holding `n` events); see [`run_consumers`].
pub(crate) async fn run_bench_consumer(
    env: &Env,
    topic: &str,
    n: usize,
    batch_size: usize,
    replay: bool,
) -> anyhow::Result<Measured> {
    run_bench_instances(env, topic, n, batch_size, replay, 1, false).await
}

/// Run `instances` processes of the benchmark consumer on one group and one schema over
/// `topic` (holding `n` events), measuring the ledger after with `ledger`; see
/// [`run_consumers`].
pub(crate) async fn run_bench_instances(
    env: &Env,
    topic: &str,
    n: usize,
    batch_size: usize,
    replay: bool,
    instances: usize,
    ledger: bool,
) -> anyhow::Result<Measured> {
    let (schema, group) = (unique("bench_apply"), unique("bench-group"));
    let commands = (0..instances.max(1))
        .map(|_| {
            let mut command = Command::new(std::env::current_exe()?);
            command.args(["--kafka-brokers", &env.kafka.brokers, "--database-url", &env.database_url]);
            for option in &env.kafka.options {
                command.arg("--kafka-option").arg(format!("{}={}", option.key, option.value));
            }
            command
                .arg("consume-child")
                .args(["--topic", topic, "--schema", &schema, "--group", &group])
                .args(["--batch-size", &batch_size.to_string()]);
            if replay {
                command.arg("--replay");
            }
            Ok(command)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    run_consumers(env, commands, &schema, Some(&group), n, ledger).await
}

/// [`run_consumers`] with one process.
pub(crate) async fn run_consumer(env: &Env, command: Command, schema: &str, n: usize) -> anyhow::Result<Measured> {
    run_consumers(env, vec![command], schema, None, n, false).await
}

/// How many members of `group` hold partitions, asked with `probe` (0 when the broker does not
/// say).
async fn members_with_partitions(probe: &std::sync::Arc<rdkafka::consumer::BaseConsumer>, group: &str) -> usize {
    let (probe, group) = (probe.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer as _;
        let groups = probe.fetch_group_list(Some(&group), Duration::from_secs(2)).ok()?;
        let group = groups.groups().first()?;
        (group.state() == "Stable")
            .then(|| group.members().iter().filter(|m| m.assignment().is_some_and(|a| a.len() > 8)).count())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// Where a run stood at a moment: when, events applied, the machine's CPU ticks and the
/// consumer processes' CPU seconds.
struct Mark {
    at: Instant,
    done: i64,
    machine: (f64, f64, f64),
    consumers: f64,
}

/// Start the consumer processes `commands` (which write one store in `schema`, as members of
/// `group` when there are several) and let them run until the stored offsets cover the `n`
/// events of their topics. The rate is timed from 1% to 100%, so group join time is left out;
/// with several processes, from when every one of them holds partitions. The processes are
/// killed and `schema` dropped after; before that, with `ledger`, the ledger's size is read
/// and the time to prune all of it is measured.
pub(crate) async fn run_consumers(
    env: &Env,
    commands: Vec<Command>,
    schema: &str,
    group: Option<&str>,
    n: usize,
    ledger: bool,
) -> anyhow::Result<Measured> {
    let instances = commands.len();
    // Where the run stood at the last poll before the timing starts; at first, before the
    // processes start (nothing applied: `schema` is new).
    let mut previous = Mark { at: Instant::now(), done: 0, machine: machine_ticks(), consumers: 0.0 };
    let mut children = Vec::new();
    let mut program = String::new();
    for mut command in commands {
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        program = command.get_program().to_string_lossy().into_owned();
        let child = command.spawn().with_context(|| format!("Failed to start the consumer {program}"))?;
        children.push(KillOnDrop(child));
    }
    // With several processes, one client asks the broker whether every one holds partitions.
    let probe = match group {
        Some(group) if instances > 1 => Some((std::sync::Arc::new(env.kafka.client_config().create()?), group)),
        _ => None,
    };
    let pool = connect_when_ready(env, schema, &mut children[0].0, &program).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut started: Option<Mark> = None;
    // With several processes: the 1% mark, for a run too short for the group to settle.
    let mut first_percent: Option<Mark> = None;
    let mut peak_rss_mb: f64 = 0.0;
    let cpu = |children: &[KillOnDrop]| children.iter().map(|c| proc_stats(c.0.id()).1).sum::<f64>();
    loop {
        for child in &mut children {
            if let Some(status) = child.0.try_wait()? {
                bail!("consumer {program} exited early: {status}");
            }
            peak_rss_mb = peak_rss_mb.max(proc_stats(child.0.id()).0);
        }
        let done: i64 = match store::stored_offsets(&pool, schema).await {
            Ok(offsets) => offsets.unwrap_or_default().values().sum(),
            Err(_) => 0,
        };
        if started.is_none() {
            let past_one_percent = done as usize >= n / 100;
            let all_in = match &probe {
                Some((probe, group)) if past_one_percent => members_with_partitions(probe, group).await == instances,
                _ => true,
            };
            let mark = Mark { at: Instant::now(), done, machine: machine_ticks(), consumers: cpu(&children) };
            // The timing starts at the previous poll's mark, not this one's: a fast run can go
            // from under 1% to every event between two polls, and timing from this poll would
            // then count no events at all (a rate of 0, ratios of NaN). From the previous mark it
            // counts every event applied since, over at most one poll more: valid at any speed.
            if past_one_percent && all_in {
                started = Some(std::mem::replace(&mut previous, mark));
            } else if past_one_percent && first_percent.is_none() {
                first_percent = Some(std::mem::replace(&mut previous, mark));
            } else {
                previous = mark;
            }
        }
        if done as usize >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("consumer {program} applied only {done} of {n} events within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = match (started, first_percent) {
        (Some(started), _) => started,
        (None, Some(first_percent)) => {
            tracing::warn!(instances, n, "the run ended before every process held partitions; timed from 1%");
            first_percent
        }
        (None, None) => bail!("consumer {program} applied {n} events without passing 1% of them"),
    };
    let elapsed = start.at.elapsed().as_secs_f64().max(1e-9);
    let events = (n as i64 - start.done) as f64;
    let cpu_seconds = cpu(&children);
    for child in &children {
        peak_rss_mb = peak_rss_mb.max(proc_stats(child.0.id()).0);
    }
    let split = CpuSplit::between(start.machine, machine_ticks(), cpu_seconds - start.consumers, events, elapsed);
    drop(children);
    let ledger = if ledger { Some(ledger_figures(&pool).await?) } else { None };
    pool.close().await;
    ceilings::drop_schema(env, schema).await;
    // The allocator keeps its outbox in a schema of its own beside its store.
    ceilings::drop_schema(env, &format!("{schema}_outbox")).await;
    Ok(Measured { per_sec: events / elapsed, peak_rss_mb, cpu_seconds, split, ledger })
}

/// The ledger's rows and size (both of the runtime's tables: the applied-event ledger and the
/// natural keys), then the time to prune all of it with the runtime's own pruning.
async fn ledger_figures(pool: &PgPool) -> anyhow::Result<LedgerFigures> {
    let (rows, bytes) = store::ledger_size(pool).await.context("Failed to measure the ledger")?;
    let started = Instant::now();
    let pruned = store::prune_ledger(pool, Duration::ZERO).await.context("Failed to prune the ledger")?;
    Ok(LedgerFigures { rows, mb: bytes as f64 / 1_048_576.0, pruned, prune_secs: started.elapsed().as_secs_f64() })
}

pub(crate) async fn connect_when_ready(
    env: &Env,
    schema: &str,
    child: &mut Child,
    program: &str,
) -> anyhow::Result<PgPool> {
    let options: sqlx::postgres::PgConnectOptions = env.database_url.parse()?;
    let pool = PgPool::connect_with(options.options([("search_path", schema)])).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // The runtime creates its tables before it consumes.
    while !matches!(store::stored_offsets(&pool, schema).await, Ok(Some(_))) {
        if let Some(status) = child.try_wait()? {
            bail!("consumer {program} exited before creating its tables: {status}");
        }
        if Instant::now() > deadline {
            bail!("consumer {program} did not create its tables within 60s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(pool)
}

pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The peer (`peers/units_peer.py`, embedded) and the schema file it decodes with.
const PEER: &str = include_str!("../peers/units_peer.py");
const ORDER_SCHEMA: &str = include_str!("../../../schemas/order_placed.v1.avsc");

/// The Python that runs the peer: `ORDERFLOW_PYTHON`, else the stack's virtualenv
/// (`scripts/stack install`), else `python3`.
fn python() -> std::path::PathBuf {
    if let Some(python) = std::env::var_os("ORDERFLOW_PYTHON") {
        return python.into();
    }
    let home = std::env::var_os("ORDERFLOW_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".orderflow")));
    match home.map(|h| h.join("venv/bin/python")) {
        Some(venv) if venv.exists() => venv,
        _ => "python3".into(),
    }
}

/// Run the Python peer over `topic` (holding `n` events): what a team would write instead of
/// the runtime (peers/README.md). Its rate is its own (first batch to last); the CPU split
/// covers its whole run, start-up included.
pub(crate) async fn run_peer(env: &Env, topic: &str, n: usize) -> anyhow::Result<Measured> {
    let dir = tempfile::Builder::new().prefix("orderflow-peer-").tempdir()?;
    let (script, schema) = (dir.path().join("units_peer.py"), dir.path().join("order_placed.v1.avsc"));
    std::fs::write(&script, PEER)?;
    std::fs::write(&schema, ORDER_SCHEMA)?;
    let python = python();
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .args([topic, &n.to_string()])
        .env("KAFKA_BROKERS", &env.kafka.brokers)
        .env("PEER_DB", &env.database_url)
        .env("ORDER_SCHEMA", &schema)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = machine_ticks();
    let started = Instant::now();
    let mut child = KillOnDrop(
        command
            .spawn()
            .with_context(|| format!("starting the peer with {} (set ORDERFLOW_PYTHON)", python.display()))?,
    );
    let (mut peak_rss_mb, mut cpu_seconds) = (0.0f64, 0.0f64);
    let deadline = Instant::now() + Duration::from_secs(1800);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        let (rss, cpu) = proc_stats(child.0.id());
        (peak_rss_mb, cpu_seconds) = (peak_rss_mb.max(rss), cpu_seconds.max(cpu));
        if Instant::now() > deadline {
            bail!("the peer did not finish {n} events within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let end = machine_ticks();
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read as _;
    if let Some(mut out) = child.0.stdout.take() {
        out.read_to_string(&mut stdout)?;
    }
    if let Some(mut err) = child.0.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    anyhow::ensure!(status.success(), "the peer failed ({status}): {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("the peer printed no JSON line: {stdout} {stderr}"))?;
    let events = report["events"].as_u64().unwrap_or(0) as usize;
    anyhow::ensure!(events >= n, "the peer applied {events} of {n} events: {stdout} {stderr}");
    let per_sec = report["rate"].as_f64().filter(|r| *r > 0.0).context("the peer reported no rate")?;
    let split = CpuSplit::between(start, end, cpu_seconds, n as f64, elapsed);
    Ok(Measured { per_sec, peak_rss_mb, cpu_seconds, split, ledger: None })
}

/// Nanoseconds per call of `f`, over enough iterations to take about 200 ms.
fn time_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let mut iterations = 1000u64;
    loop {
        let started = Instant::now();
        for _ in 0..iterations {
            f();
        }
        let elapsed = started.elapsed();
        if elapsed >= Duration::from_millis(200) {
            return elapsed.as_nanos() as f64 / iterations as f64;
        }
        iterations *= 4;
    }
}

/// Poll a future that completes without waiting (single-object decode never awaits), so the
/// figure is the codec's and not an executor's.
fn poll_now<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("single-object decode awaited"),
    }
}

fn codec_figures(pipeline: &mut Pipeline) -> anyhow::Result<()> {
    let codec = Codec::new();
    let order = Event::OrderPlaced(samples::order_placed());
    let inventory = Event::InventoryChanged(samples::inventory_changed());
    let order_bytes = codec.encode_single_object(&order)?;
    let inventory_bytes = codec.encode_single_object(&inventory)?;
    pipeline.encode_order_ns = time_ns(|| {
        black_box(codec.encode_single_object(black_box(&order)).ok());
    });
    pipeline.decode_order_ns = time_ns(|| {
        black_box(poll_now(codec.decode(black_box(&order_bytes))).ok());
    });
    pipeline.encode_inventory_ns = time_ns(|| {
        black_box(codec.encode_single_object(black_box(&inventory)).ok());
    });
    pipeline.decode_inventory_ns = time_ns(|| {
        black_box(poll_now(codec.decode(black_box(&inventory_bytes))).ok());
    });
    Ok(())
}

pub async fn measure(env: &Env, settings: &Settings, topic: &str, with_backlog: bool) -> anyhow::Result<Pipeline> {
    let mut pipeline = Pipeline::default();
    let apply = run_bench_consumer(env, topic, settings.records, settings.batch_size, false).await?;
    pipeline.apply_per_sec = apply.per_sec;
    pipeline.apply_cpu_ms_per_1000 = apply.cpu_seconds * 1000.0 / settings.records as f64 * 1000.0;
    pipeline.apply_split = apply.split;
    let peer = run_peer(env, topic, settings.records).await?;
    pipeline.peer_per_sec = peer.per_sec;
    pipeline.peer_split = peer.split;
    let replay = run_bench_consumer(env, topic, settings.records, settings.batch_size, true).await?;
    pipeline.replay_per_sec = replay.per_sec;

    // Memory under a backlog (once per harness run: filling it takes a while): fill a topic
    // first, then let the consumer drain it.
    if !with_backlog {
        codec_figures(&mut pipeline)?;
        return Ok(pipeline);
    }
    let backlog_topic = unique("bench-backlog").replace('_', "-");
    ceilings::create_topic(env, &backlog_topic).await?;
    ceilings::fill_orders(env, &backlog_topic, settings.backlog).await?;
    let backlog =
        run_bench_instances(env, &backlog_topic, settings.backlog, settings.batch_size, false, 1, true).await?;
    pipeline.backlog_events = settings.backlog;
    pipeline.backlog_peak_rss_mb = backlog.peak_rss_mb;
    pipeline.backlog_apply_per_sec = backlog.per_sec;
    pipeline.backlog_ledger = backlog.ledger.unwrap_or_default();
    // Two processes on one group over the same backlog: long enough that the group settles
    // with both early on (the rate is timed from then).
    let two = run_bench_instances(env, &backlog_topic, settings.backlog, settings.batch_size, false, 2, false).await?;
    pipeline.two_per_sec = two.per_sec;
    pipeline.two_split = two.split;

    codec_figures(&mut pipeline)?;
    Ok(pipeline)
}
