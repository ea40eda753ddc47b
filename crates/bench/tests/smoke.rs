//! The harness's smoke mode against the real broker and Postgres: every figure is measured
//! and rendered (values are not asserted: speed is a report, not a test).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quick_mode_measures_every_figure_and_renders_the_report() {
    orderflow_testkit::init_test_logs();
    let env = orderflow_bench::Env {
        kafka: orderflow_testkit::kafka_args(),
        database_url: orderflow_testkit::database_url(),
    };
    // The child consumer is this crate's binary; run the harness through it so
    // `current_exe()` is the harness, as in a real run. The ingress and consumers it spawns
    // are the debug binaries next to it (a workspace test run builds them; with
    // `-p orderflow-bench` alone, `cargo build --workspace --bins` first).
    let exe = orderflow_testkit::process::bin_path("orderflow-bench").unwrap();
    // The harness runs the real consumer binaries beside it: a workspace run builds them;
    // `-p orderflow-bench` alone does not (build them first, or this fails here, clearly).
    for spec in orderflow_registry::CONSUMERS {
        orderflow_testkit::process::bin_path(spec.binary).unwrap();
    }
    let out = std::env::temp_dir().join(orderflow_testkit::unique_name("bench-report")).with_extension("md");
    let status = std::process::Command::new(exe)
        .args(["--kafka-brokers", &env.kafka.brokers, "--database-url", &env.database_url, "run", "--quick", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let report = std::fs::read_to_string(&out).unwrap();
    for figure in [
        "raw produce",
        "raw consume",
        "raw batched upsert",
        "binary COPY",
        "one-row commits",
        "consumer apply rate",
        "replay rate",
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
        "ingress maximum requests/s",
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
    ] {
        let line = report.lines().find(|l| l.contains(figure)).unwrap_or_else(|| panic!("no `{figure}` in:\n{report}"));
        assert!(!line.contains("n/a"), "{figure} was not measured: {line}");
    }
    assert!(report.contains(orderflow_bench::report::BEGIN) && report.contains(orderflow_bench::report::END));
    let _ = std::fs::remove_file(&out);
}
