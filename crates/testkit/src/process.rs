//! Run a workspace binary as a child process, so tests can stop it gracefully (SIGTERM) or
//! at a bad moment (SIGKILL), and read what it logged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Path of the workspace binary `name`, next to the test executable's directory
/// (`target/<profile>/<name>`). Cargo and nextest build every binary of the workspace
/// before running its tests.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("no current exe")?;
    let mut dir = exe.parent().context("test exe has no directory")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    // Binaries sit in target/<profile>, examples in target/<profile>/examples.
    for candidate in [dir.join(name), dir.join("examples").join(name)] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "binary {name} not found in {} or its examples/; build it first (`cargo build --workspace --bins --examples`)",
        dir.display()
    )
}

/// A running child process whose stdout and stderr go to a log file. Killed when dropped.
pub struct BinaryProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl BinaryProcess {
    /// Start the workspace binary `name` with `args` and extra environment `envs`. A
    /// consumer's read API accepts the tests' token ([`crate::API_TOKENS_ENV`]) unless `envs`
    /// sets `API_TOKENS` itself; other binaries ignore it.
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let path = bin_path(name)?;
        Self::spawn_path(name, &path, args, envs)
    }

    /// Start any program (for example a script) the same way.
    pub fn spawn_path(name: &str, path: &Path, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let log_dir = tempfile::Builder::new().prefix("orderflow-test-").tempdir()?;
        let log_path = log_dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(path);
        command.args(args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        command.env(crate::API_TOKENS_ENV.0, crate::API_TOKENS_ENV.1);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().with_context(|| format!("failed to start {}", path.display()))?;
        Ok(BinaryProcess { name: name.to_owned(), child, log_path, _log_dir: log_dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub fn kill_hard(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill().ok();
        Ok(self.child.wait()?)
    }

    /// SIGTERM, then wait up to `timeout` for the process to exit on its own.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).ok();
        self.wait(timeout)
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}; output:\n{}", self.name, self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for BinaryProcess {
    fn drop(&mut self) {
        // A failing test shows what the process said (its log file is deleted with it).
        if std::thread::panicking() {
            let output = self.output();
            let tail: Vec<&str> = output.lines().rev().take(60).collect();
            eprintln!("--- last lines of {} (pid {}) ---", self.name, self.child.id());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
