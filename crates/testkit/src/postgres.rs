//! A private PostgreSQL server for one test, so a test can restart (or crash) *its* database
//! while the rest of the suite keeps using the shared one. Made with Debian's `initdb` and
//! `pg_ctl` (`/usr/lib/postgresql/<version>/bin`, or `ORDERFLOW_PG_BIN`) in a temporary
//! directory, listening on a free loopback port with trust authentication, run as the
//! `postgres` OS user when the test runs as root (PostgreSQL refuses to run as root).
//! Stopped (immediately) and deleted on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A running private server (see the module doc).
pub struct PrivatePostgres {
    bin: PathBuf,
    port: u16,
    /// The cluster's data directory, inside `dir`.
    data: PathBuf,
    /// (uid, gid) the server runs as: `postgres` when we are root, else ourselves.
    owner: Option<(u32, u32)>,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// `initdb` a fresh cluster and start it (a second or two).
    pub fn start() -> anyhow::Result<Self> {
        let bin = pg_bin()?;
        let dir = tempfile::Builder::new().prefix("orderflow-pg-").tempdir().context("temp dir for Postgres")?;
        let owner = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")?.context(
                "Failed to find a user to run the server as: this runs as root and there is no `postgres` user",
            )?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(dir.path(), Some(uid.into()), Some(gid.into())).context("chown the Postgres dir")?;
        }
        // Below the ephemeral range: a restart must get the same port back.
        let port = crate::ports::free_port()?;
        let data = dir.path().join("data");
        let server = PrivatePostgres { bin, port, data, owner, dir };
        server
            .run("initdb", &["-D", &server.data_str(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])?;
        server.start_server()?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `pg_ctl stop -m immediate`: every backend is killed at once, no checkpoint, like a
    /// crash; the next start recovers from the WAL.
    pub fn stop_immediate(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-D", &self.data_str(), "-m", "immediate", "-w", "stop"]).map(drop)
    }

    /// Start the server again on its data (crash recovery first, if it was stopped immediately);
    /// returns once it accepts connections.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let log = self.dir.path().join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.run("pg_ctl", &["-D", &self.data_str(), "-l", &log.display().to_string(), "-o", &options, "-w", "start"])
            .map(drop)
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(self.bin.join(program));
        command.args(args).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        let output = command.output().with_context(|| format!("Failed to run {program}"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            bail!("{program} {} failed ({}):\n{text}\n{}", args.join(" "), output.status, self.log());
        }
        Ok(text)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
    }
}

/// Where `initdb` and `pg_ctl` are: `ORDERFLOW_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn pg_bin() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("ORDERFLOW_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("no {} (is PostgreSQL installed? `scripts/stack install`)", root.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no PostgreSQL server binaries (initdb) under /usr/lib/postgresql")
}
