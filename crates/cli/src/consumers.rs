//! `orderflow consumers`: the registered consumers (`crates/registry`), for people and for
//! scripts (`scripts/stack` starts and checks the demo's consumers from this list).

use orderflow_registry::{CONSUMERS, Spec};
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Output: one line per consumer, tab-separated:
  name  binary  port  topics (comma-separated)

Examples:
  orderflow consumers
  orderflow consumers --json
  orderflow consumers deploy           # rewrite their deployment files from the registry
  orderflow consumers deploy --check   # fail if a file differs")]
pub struct ConsumersArgs {
    /// A JSON array instead of tab-separated lines, with the schema and a description too.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<ConsumersCommand>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConsumersCommand {
    /// Write the consumers' deployment files from the registry: deploy/kubernetes/<name>.yaml
    /// and their services in docker-compose.yml.
    Deploy {
        /// Compare instead of writing; fail when a file differs.
        #[arg(long)]
        check: bool,
        /// The repository to write into.
        #[arg(long, default_value = ".")]
        repo: std::path::PathBuf,
    },
}

/// One consumer as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub name: &'static str,
    pub binary: &'static str,
    pub port: u16,
    pub topics: &'static [&'static str],
    pub schema: String,
    pub about: &'static str,
}

impl Listed {
    pub fn of(spec: &Spec) -> Listed {
        Listed {
            name: spec.name,
            binary: spec.binary,
            port: spec.port,
            topics: spec.topics,
            schema: spec.schema(),
            about: spec.about,
        }
    }
}

/// The tab-separated listing, one line per consumer.
pub fn lines(specs: &[&Spec]) -> String {
    specs.iter().map(|s| format!("{}\t{}\t{}\t{}\n", s.name, s.binary, s.port, s.topics.join(","))).collect()
}

pub fn run(args: ConsumersArgs) -> anyhow::Result<()> {
    if let Some(ConsumersCommand::Deploy { check, repo }) = args.command {
        return crate::deploy::run(&repo, check);
    }
    let text = if args.json {
        let listed: Vec<Listed> = CONSUMERS.iter().map(|s| Listed::of(s)).collect();
        format!("{}\n", serde_json::to_string_pretty(&listed)?)
    } else {
        lines(CONSUMERS)
    };
    // A reader that stops early (`| head`) is not an error of this command.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_consumer_is_one_tab_separated_line_with_its_contract_port() {
        let listing = lines(CONSUMERS);
        assert_eq!(listing.lines().count(), CONSUMERS.len());
        assert!(
            listing.contains("fulfillment\tfulfillment\t8081\torders.v1,inventory.v1,allocations.v1\n"),
            "{listing}"
        );
        assert!(listing.contains("email\temail\t8082\torders.v1,allocations.v1\n"), "{listing}");
        assert!(listing.contains("allocator\tallocator\t8088\torders.v1,inventory.v1\n"), "{listing}");
        for line in listing.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 4, "{line}");
            assert!(fields[2].parse::<u16>().is_ok(), "{line}");
        }
    }
}
