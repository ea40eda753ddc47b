//! `orderflow openapi`: the OpenAPI 3.1 description of every HTTP service of this build (the
//! ingress and each registered consumer's read API), as each serves it at `/openapi.json`.
//! The committed copies under `docs/openapi/` are written with `--write` and checked with
//! `--check` (the test suite runs the check, so a handler changed without its description
//! fails there).

use std::path::{Path, PathBuf};

use anyhow::Context;
use orderflow_registry::CONSUMERS;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  orderflow openapi ingress              # print one service's description
  orderflow openapi --write              # rewrite docs/openapi/<service>.json
  orderflow openapi --check              # fail if a committed copy differs from the code")]
pub struct OpenapiArgs {
    /// The service to print: `ingress` or a consumer's name.
    #[arg(conflicts_with_all = ["write", "check"], required_unless_present_any = ["write", "check"])]
    pub service: Option<String>,
    /// Write every service's description into `--dir`.
    #[arg(long, conflicts_with = "check")]
    pub write: bool,
    /// Compare every service's description with the copy in `--dir`; fail when one differs.
    #[arg(long)]
    pub check: bool,
    /// Where the committed copies live.
    #[arg(long, default_value = "docs/openapi")]
    pub dir: PathBuf,
}

/// Every service's name and description, the ingress first.
pub fn all() -> Vec<(String, String)> {
    let mut specs = vec![("ingress".to_owned(), orderflow_service::openapi::to_json(&orderflow_ingress::openapi()))];
    for spec in CONSUMERS {
        specs.push((spec.name.to_owned(), orderflow_service::openapi::to_json(&orderflow_consumer_kit::openapi(spec))));
    }
    specs
}

/// The committed copies in `dir` that differ from `expected` (or are missing), and files
/// there that no service owns (`foreign`).
fn compare(dir: &Path, expected: &[(String, String)]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let stale = expected
        .iter()
        .map(|(name, json)| (dir.join(format!("{name}.json")), json))
        .filter(|(path, json)| std::fs::read_to_string(path).ok().as_deref() != Some(json.as_str()))
        .map(|(path, _)| path)
        .collect();
    let mut foreign = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let owned =
            path.file_stem().and_then(|s| s.to_str()).is_some_and(|stem| expected.iter().any(|(name, _)| name == stem));
        if path.extension().is_some_and(|e| e == "json") && !owned {
            foreign.push(path);
        }
    }
    (stale, foreign)
}

pub fn run(args: OpenapiArgs) -> anyhow::Result<()> {
    let specs = all();
    if let Some(service) = &args.service {
        let (_, json) = specs.iter().find(|(name, _)| name == service).with_context(|| {
            format!(
                "no service named {service}; known: {}",
                specs.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?;
        print!("{json}");
        return Ok(());
    }
    let (stale, foreign) = compare(&args.dir, &specs);
    if args.check {
        let differing: Vec<String> = stale.iter().chain(&foreign).map(|p| p.display().to_string()).collect();
        anyhow::ensure!(
            differing.is_empty(),
            "the committed OpenAPI descriptions differ from the code (run `orderflow openapi --write`): {}",
            differing.join(", ")
        );
        println!("{} OpenAPI descriptions in {} match the code", specs.len(), args.dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    for (name, json) in &specs {
        let path = args.dir.join(format!("{name}.json"));
        if stale.contains(&path) {
            std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    for path in &foreign {
        println!("{} belongs to no service; remove it if it is not yours", path.display());
    }
    Ok(())
}
