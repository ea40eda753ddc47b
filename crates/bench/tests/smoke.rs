//! The harness's smoke mode against the real broker and Postgres: every figure is measured
//! and rendered (values are not asserted: speed is a report, not a test).

/// Run `orderflow-bench <command> --quick --out <out>` and return the report it wrote into `out`
/// (which may hold other sections already).
///
/// The child consumer is this crate's binary; run the harness through it so `current_exe()` is
/// the harness, as in a real run. The ingress, relay and consumers it spawns are the debug
/// binaries next to it: a workspace test run builds them; `-p orderflow-bench` alone does not
/// (`cargo build --workspace --bins` first, or this fails here, clearly).
fn quick(command: &str, out: &std::path::Path) -> String {
    let exe = orderflow_testkit::process::bin_path("orderflow-bench").unwrap();
    let binaries = orderflow_registry::CONSUMERS.iter().map(|spec| spec.binary).chain(["ingress", "outbox-relay"]);
    for binary in binaries {
        orderflow_testkit::process::bin_path(binary).unwrap();
    }
    let (brokers, database_url) = (orderflow_testkit::kafka_args().brokers, orderflow_testkit::database_url());
    let status = std::process::Command::new(exe)
        .args(["--kafka-brokers", &brokers, "--database-url", &database_url, command, "--quick", "--out"])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "orderflow-bench {command} --quick failed");
    std::fs::read_to_string(out).unwrap()
}

/// Each of `figures` is on a line of `report`, measured.
fn assert_measured(report: &str, figures: &[&str]) {
    for figure in figures {
        let line = report.lines().find(|l| l.contains(figure)).unwrap_or_else(|| panic!("no `{figure}` in:\n{report}"));
        assert!(!line.contains("n/a"), "{figure} was not measured: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quick_mode_measures_every_figure_and_renders_the_report() {
    orderflow_testkit::init_test_logs();
    // Its own directory: the pictures go to `img/` beside the report.
    let dir = std::env::temp_dir().join(orderflow_testkit::unique_name("bench-report"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("benchmarks.md");
    let report = quick("run", &out);
    assert_measured(
        &report,
        &[
            "raw produce",
            "raw consume",
            "raw batched upsert",
            "binary COPY",
            "one-row commits",
            "consumer apply rate",
            "peer apply rate",
            "runtime ÷ peer",
            "replay rate",
            "two processes of the consumer on one group draining the same backlog",
            "two processes: cores busy",
            "backlog apply rate ÷",
            "ledger after the backlog",
            "pruning all of it",
            "peak RSS",
            "codec: decode OrderPlaced",
            "| broker (Apache Kafka) |",
            "| PostgreSQL |",
            "| consumer |",
            "Cores busy on average",
            "`fulfillment` consumer",
            "`email` consumer",
            "`analytics` consumer",
            "`inventory-projection` consumer",
            "`order-history` consumer",
            "ingress requests/s, closed loop, 64 in flight",
            "ingress requests/s, closed loop, 256 in flight",
            "bare HTTP ceiling",
            "ingress maximum requests/s",
            "ingress CPU per 1000 requests, closed loops",
            "ingress latency at 50% load, from scheduled send, p50",
            "ingress latency at 50% load, from scheduled send, p99 ",
            "ingress latency at 50% load, from scheduled send, p99.9",
            "maximum sustainable rate",
            "end-to-end latency at 50%: scheduled send → row visible, p50",
            "end-to-end latency at 50%: scheduled send → row visible, p99 ",
            "end-to-end latency at 50%: scheduled send → row visible, p99.9",
            "end-to-end latency at 80%: scheduled send → row visible, p50",
            "end-to-end latency at 80%: scheduled send → row visible, p99 ",
            "end-to-end latency at 80%: scheduled send → row visible, p99.9",
            "`pg_notify` delay",
            "ingress peak RSS",
            "ingress CPU per 1000",
            "fulfillment peak RSS",
            "fulfillment CPU per 1000",
        ],
    );
    assert!(
        report.contains(orderflow_bench::report::PIPELINE_SECTION.begin)
            && report.contains(orderflow_bench::report::PIPELINE_SECTION.end)
    );
    // Each picture is drawn, linked from the report, and plots measured data: every latency
    // series and every apply-rate bar is there.
    let spectrum = std::fs::read_to_string(dir.join("img").join(orderflow_bench::plots::LATENCY_SPECTRUM)).unwrap();
    for (_, label) in orderflow_bench::plots::LATENCY_SERIES {
        assert!(spectrum.contains(&label.replace('>', "&gt;")), "no `{label}` series in the spectrum");
    }
    assert!(spectrum.matches("<polyline").count() >= orderflow_bench::plots::LATENCY_SERIES.len());
    let rates = std::fs::read_to_string(dir.join("img").join(orderflow_bench::plots::APPLY_RATES)).unwrap();
    for (label, _) in orderflow_bench::plots::apply_bars() {
        assert!(
            rates.contains(&format!(">{label}<")) || rates.contains(&format!(">\n{label}\n<")),
            "no `{label}` bar in the apply rates"
        );
    }
    for picture in [orderflow_bench::plots::LATENCY_SPECTRUM, orderflow_bench::plots::APPLY_RATES] {
        assert!(report.contains(&format!("](img/{picture})")), "the report links {picture}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quick_allocation_mode_measures_decisions_and_their_latency_and_writes_its_own_section() {
    orderflow_testkit::init_test_logs();
    // A report that already holds the pipeline's section: the allocation run keeps it.
    let out = std::env::temp_dir().join(orderflow_testkit::unique_name("bench-allocation")).with_extension("md");
    let pipeline = orderflow_bench::report::PIPELINE_SECTION;
    std::fs::write(&out, format!("# Benchmarks\n{}\nthe pipeline's figures\n{}\n", pipeline.begin, pipeline.end))
        .unwrap();
    let report = quick("allocation", &out);
    assert_measured(
        &report,
        &[
            "allocator decisions/s (orders decided), one hot sku",
            "one hot sku: orders allocated in full",
            "one hot sku: orders backordered",
            "one hot sku: decision events written",
            "one hot sku: allocator CPU per 1000 decisions",
            "allocator decisions/s (orders decided), spread over 10,000 skus",
            "spread over 10,000 skus: PostgreSQL CPU per 1000 decisions",
            "maximum sustainable rate",
            "scheduled POST → decision on `allocations.v1`, p50",
            "scheduled POST → decision on `allocations.v1`, p99 ",
            "requests not accepted at 50%",
        ],
    );
    // The quick run's 2,000 hot orders meet 1,000 units: exactly half are allocated.
    for figure in ["one hot sku: orders allocated in full", "one hot sku: orders backordered"] {
        let line = report.lines().find(|l| l.contains(figure)).unwrap();
        assert!(line.contains("| 1,000 (1,000–1,000) |"), "{line}");
    }
    assert!(report.contains("the pipeline's figures"), "the pipeline's section was kept:\n{report}");
    let allocation = orderflow_bench::report::ALLOCATION_SECTION;
    assert!(report.contains(allocation.begin) && report.contains(allocation.end));
    let _ = std::fs::remove_file(&out);
}
