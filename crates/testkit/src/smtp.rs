//! A real SMTP server that keeps what it receives: the email consumer's test sink
//! (`consumers/email/tests/smtp_sink.py`, Python's aiosmtpd, interpreter from
//! `ORDERFLOW_PYTHON`), for tests across binaries that count the messages a mail server got.

use std::path::PathBuf;
use std::time::Duration;

use crate::{repo_root, wait_until};

/// An aiosmtpd server on a free port, writing each message to a file; killed when dropped.
pub struct SmtpSink {
    port: u16,
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Start the sink on a free port (below the ephemeral range, so it can be started again
    /// on it: [`crate::ports`]) and wait until it accepts connections.
    pub async fn start() -> SmtpSink {
        Self::on(crate::ports::free_port().expect("a free port for the SMTP sink")).await
    }

    /// Start the sink on `port` (again, after a test stopped it to simulate an outage).
    pub async fn on(port: u16) -> SmtpSink {
        Self::launch(port, None).await
    }

    /// A server on `port` that answers every message with a permanent rejection (550).
    pub async fn rejecting(port: u16) -> SmtpSink {
        Self::launch(port, Some("reject".to_owned())).await
    }

    /// A server on `port` that keeps each message at once but acknowledges it `seconds` later.
    pub async fn slow(port: u16, seconds: u32) -> SmtpSink {
        Self::launch(port, Some(format!("delay={seconds}"))).await
    }

    async fn launch(port: u16, option: Option<String>) -> SmtpSink {
        let python = std::env::var("ORDERFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
        let dir = tempfile::tempdir().unwrap();
        let script = repo_root().join("consumers/email/tests/smtp_sink.py");
        let mut child = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(port.to_string())
            .arg(dir.path())
            .args(option)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {python} {}: {e} (set ORDERFLOW_PYTHON to a Python with tests/requirements.txt)",
                    script.display()
                )
            });
        wait_until("the SMTP sink to accept connections", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the SMTP sink exited with {status}; is aiosmtpd installed for {python}? (pip install -r tests/requirements.txt)");
            }
            async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ()) }
        })
        .await;
        SmtpSink { port, _child: child, dir }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>`, the email consumer's `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, as received (headers and body), in arrival order.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
    }
}
