//! `scripts/stack demo` end to end, as a developer runs it: the ingress, every registered
//! consumer (`orderflow consumers`) and an SMTP server started from the built binaries, a sample load through the ingress,
//! and `orderflow verify` comparing every read store with it. Then every command the summary
//! prints is run as printed, and a store that disagrees is shown to fail the check.
//!
//! The demo gets its own run directory, ports, topics, schemas and groups (the script's
//! `ORDERFLOW_RUN_DIR`, `ORDERFLOW_DEMO_PORT_BASE`, `ORDERFLOW_DEMO_SMTP_PORT`,
//! `ORDERFLOW_DEMO_NAMESPACE`), so it runs beside a developer's demo and the rest of the
//! suite, on the broker and Postgres they share; `stop-demo` stops only its services.
//! It runs the binaries this test run built (`ORDERFLOW_BIN_DIR`): `cargo test --workspace`
//! and nextest build them, `cargo test -p orderflow-e2e` alone does not, so build them
//! first then (`cargo build --workspace --bins`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use orderflow_testkit::process::{BinaryProcess, bin_path};
use orderflow_testkit::{repo_root, unique_ident, unique_name};

/// A registered consumer, as `orderflow consumers` lists it.
struct Consumer {
    name: String,
    binary: String,
    port: u16,
}

/// The registered consumers, from the CLI the demo runs.
fn consumers() -> Vec<Consumer> {
    let cli = bin_path("orderflow").expect("the demo's binaries are built (cargo build --workspace --bins)");
    let out = Command::new(cli).arg("consumers").output().expect("orderflow consumers runs");
    assert!(out.status.success(), "orderflow consumers: {}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            Consumer { name: fields[0].to_owned(), binary: fields[1].to_owned(), port: fields[2].parse().unwrap() }
        })
        .collect()
}

/// A demo of this test's own; its services are stopped when it is dropped, pass or fail.
struct Demo {
    run_dir: PathBuf,
    env: Vec<(String, String)>,
    consumers: Vec<Consumer>,
}

impl Demo {
    fn new() -> Demo {
        let consumers = consumers();
        let mut bin_dir = None;
        for name in ["orderflow", "ingress"].into_iter().chain(consumers.iter().map(|c| c.binary.as_str())) {
            let path = bin_path(name).expect("the demo's binaries are built (cargo build --workspace --bins)");
            bin_dir = path.parent().map(Path::to_path_buf);
        }
        let run_dir = std::env::temp_dir().join(unique_name("demo-run"));
        // The demo puts each consumer at base + (its port - 8080), the allocator's relay at base + 9.
        let ports = consumers.iter().map(|c| c.port - 8080 + 1).max().unwrap().max(RELAY_OFFSET + 1);
        let base = free_port_block(ports);
        let smtp = loop {
            let port = free_port();
            if !(base..base + ports).contains(&port) {
                break port;
            }
        };
        let env = vec![
            ("ORDERFLOW_RUN_DIR".to_owned(), run_dir.to_str().unwrap().to_owned()),
            ("ORDERFLOW_DEMO_PORT_BASE".to_owned(), base.to_string()),
            ("ORDERFLOW_DEMO_SMTP_PORT".to_owned(), smtp.to_string()),
            ("ORDERFLOW_DEMO_NAMESPACE".to_owned(), unique_ident("demo")),
            // The binaries this test run built: a nested cargo build would wait on its lock.
            ("ORDERFLOW_BIN_DIR".to_owned(), bin_dir.unwrap().to_str().unwrap().to_owned()),
            ("DEMO_ORDERS".to_owned(), "30".to_owned()),
        ];
        Demo { run_dir, env, consumers }
    }

    fn stack(&self, args: &[&str]) -> Output {
        let mut command = Command::new(repo_root().join("scripts/stack"));
        command.args(args).envs(self.env.iter().map(|(k, v)| (k, v)));
        command.output().expect("scripts/stack runs")
    }

    fn port(&self, offset: u16) -> u16 {
        self.env.iter().find(|(k, _)| k == "ORDERFLOW_DEMO_PORT_BASE").unwrap().1.parse::<u16>().unwrap() + offset
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let stopped = self.stack(&["stop-demo"]);
        if !stopped.status.success() {
            eprintln!("stop-demo failed:\n{}", text(&stopped));
        }
        std::fs::remove_dir_all(&self.run_dir).ok();
    }
}

/// Where the demo runs the relay of the allocator's outbox: base + 9 (8089 by default).
const RELAY_OFFSET: u16 = 9;

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn free_port() -> u16 {
    orderflow_testkit::ports::free_port().unwrap()
}

/// The first of `n` consecutive ports that are free right now, below the ephemeral range.
fn free_port_block(n: u16) -> u16 {
    orderflow_testkit::ports::free_block(&(0..n).collect::<Vec<_>>()).unwrap()
}

fn sh(line: &str) -> Output {
    Command::new("bash").args(["-c", line]).output().expect("bash runs")
}

#[test]
fn the_demo_checks_every_read_store_against_its_sample_load_and_its_printed_commands_work() {
    let demo = Demo::new();

    // Act: the demo, as a developer runs it (its own deadlines: 30 s per service to start,
    // 120 s to catch up, 60 s for the stores to match; this one is the outer bound).
    let mut run = BinaryProcess::spawn_path(
        "stack-demo",
        &repo_root().join("scripts/stack"),
        &["demo"],
        &demo.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
    )
    .unwrap();
    let status = run.wait(Duration::from_secs(600)).unwrap();
    let out = run.output();

    // Assert: it succeeded because every store matched.
    assert!(status.success(), "the demo failed:\n{out}");
    assert!(out.contains("every read store matches the sample load"), "{out}");
    for store in demo.consumers.iter().map(|c| c.name.as_str()) {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(store) && l.split_whitespace().nth(1) == Some("ok")),
            "{store} is not reported ok:\n{out}"
        );
    }
    assert!(out.contains("30 orders (15 shipped, 15 pending)"), "{out}");

    // Every command the summary prints works as printed.
    let commands: Vec<&str> =
        out.lines().skip_while(|l| *l != "look at it:").skip(1).take_while(|l| !l.is_empty()).map(str::trim).collect();
    assert_eq!(
        commands.len(),
        11,
        "fulfillment, email, sales, inventory, order history, stock, allocation, allocations topic, metrics, lag, verify:\n{out}"
    );
    for command in &commands {
        let ran = sh(command);
        let said = text(&ran);
        assert!(ran.status.success(), "`{command}` failed:\n{said}");
        assert!(!said.trim().is_empty() && !said.contains("\"error\""), "`{command}` answered:\n{said}");
    }
    let sales = commands.iter().find(|c| c.contains("/v1/sales")).unwrap();
    assert!(text(&sh(sales)).contains("\"currency\":\"EUR\""), "the sales command shows this run's sales");

    // A store that disagrees with the expected file fails the check, naming the difference.
    let verify = commands.iter().find(|c| c.contains(" verify ")).unwrap();
    let expected_path = demo.run_dir.join("run-expected-wrong.json");
    let mut expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo.run_dir.join("expected.json")).unwrap()).unwrap();
    let sku = expected["skus"].as_object().unwrap().keys().next().unwrap().clone();
    let on_hand = expected["skus"][&sku]["on_hand"].as_i64().unwrap();
    expected["skus"][&sku]["on_hand"] = (on_hand + 1).into();
    std::fs::write(&expected_path, serde_json::to_vec(&expected).unwrap()).unwrap();
    let wrong = sh(&verify.replace(
        &format!("--expect-file {}", demo.run_dir.join("expected.json").display()),
        &format!("--expect-file {}", expected_path.display()),
    ));
    let said = text(&wrong);
    assert_eq!(wrong.status.code(), Some(3), "{said}");
    assert!(said.contains("inventory-projection DIFFERS"), "{said}");
    assert!(said.contains(&format!("{sku}: on_hand {on_hand} (expected {})", on_hand + 1)), "{said}");

    // stop-demo stops this demo's services and nothing else.
    let stopped = demo.stack(&["stop-demo"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    // Nothing listens on the ports the demo served on. (Binding them is no test: a port of the
    // block may be any process's ephemeral client port by now.)
    let served = [demo.port(0), demo.port(RELAY_OFFSET)]
        .into_iter()
        .chain(demo.consumers.iter().map(|c| demo.port(c.port - 8080)));
    for port in served {
        let connected = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2));
        assert!(connected.is_err(), "something still listens on the demo's port {port} after stop-demo");
    }
    let status = demo.stack(&["status"]);
    assert!(status.status.success(), "the broker and Postgres still run:\n{}", text(&status));
    assert!(!text(&status).contains("service"), "no service of this demo is left:\n{}", text(&status));
}

#[test]
fn a_demo_whose_port_is_taken_starts_nothing_and_says_how_to_move_it() {
    // Arrange: something else holds the ingress's port.
    let demo = Demo::new();
    let squatter = TcpListener::bind(("127.0.0.1", demo.port(0))).unwrap();

    // Act
    let run = demo.stack(&["demo"]);

    // Assert
    let said = text(&run);
    assert!(!run.status.success(), "the demo must refuse a taken port:\n{said}");
    assert!(said.contains(&format!("ingress: port 127.0.0.1:{} is taken", demo.port(0))), "{said}");
    assert!(said.contains("ORDERFLOW_DEMO_PORT_BASE"), "the message says how to move the demo:\n{said}");
    let started: Vec<_> = std::fs::read_dir(&demo.run_dir)
        .map(|dir| dir.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pid")).collect())
        .unwrap_or_default();
    assert!(started.is_empty(), "nothing was started: {started:?}");
    drop(squatter);
}
