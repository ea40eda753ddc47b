//! The local stack script (`scripts/stack`): `up` is harmless when everything already runs,
//! and a taken broker port is reported clearly instead of starting a second broker.

use std::net::TcpListener;
use std::process::{Command, Output};

use orderflow_testkit::process::bin_path;
use orderflow_testkit::repo_root;

fn stack(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(repo_root().join("scripts/stack"));
    command.args(args);
    // Use the CLI the test run already built: a nested `cargo build` would wait for the lock
    // that `cargo test` holds on the target directory.
    command.env("ORDERFLOW_CLI", bin_path("orderflow").unwrap());
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("scripts/stack runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn stack_up_is_harmless_when_everything_already_runs() {
    let before = stack(&["status"], &[]);
    assert!(before.status.success(), "the test suite runs with the stack up:\n{}", text(&before));
    let up = stack(&["up"], &[]);
    let out = text(&up);
    assert!(up.status.success(), "{out}");
    assert!(out.contains("already running"), "{out}");
    assert!(out.contains("exists  orders.v1"), "{out}");
    assert!(out.contains("exists  inventory.v1"), "{out}");
    let after = stack(&["status"], &[]);
    let running = |o: &Output| text(o).lines().find(|l| l.starts_with("broker")).map(str::to_owned);
    assert_eq!(running(&before), running(&after), "the broker was not restarted");
}

#[test]
fn stack_up_refuses_a_taken_broker_port_and_names_it() {
    // Arrange: something else holds the port the stack would use.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port().to_string();
    let state = tempfile_dir();

    // Act
    let up = stack(
        &["up"],
        &[
            ("ORDERFLOW_KAFKA_PORT", &port),
            ("KAFKA_BROKERS", &format!("127.0.0.1:{port}")),
            ("ORDERFLOW_STACK_DIR", state.to_str().unwrap()),
        ],
    );

    // Assert
    let out = text(&up);
    assert!(!up.status.success(), "up must fail when the port is taken:\n{out}");
    assert!(out.contains(&format!("port 127.0.0.1:{port} is already taken")), "{out}");
    assert!(out.contains("ORDERFLOW_KAFKA_PORT"), "the message says how to pick another port:\n{out}");
    assert!(!state.join("kafka/node-1/kafka.pid").exists(), "no broker was started");
    drop(squatter);
    std::fs::remove_dir_all(&state).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(orderflow_testkit::unique_name("stack-state"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
