//! One shape for every consumer binary: a [`Spec`] (name, binary, port, topics, how to run
//! its handler bare), and [`main`], the whole of a consumer's `main`.
//!
//! A consumer crate declares `pub const CONSUMER: Spec` in its `lib.rs` and its `main.rs` is
//! one call to [`main`]; `crates/registry` lists the `CONSUMER` of every crate, and the CLI,
//! the bench, `scripts/stack` and the docs checks read that list.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use orderflow_runtime::{Handler, Runtime, RuntimeArgs};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::Consumer;

/// A boxed future that can be spawned.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A boxed future to await where it was made (connecting a store: sqlx's futures are not
/// provably `Send` behind a generic handler).
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// How to run a consumer's handler alone, without its read API or companion tasks:
/// `orderflow replay` rebuilds a store this way (with `replay = true`). Build it with
/// [`bare::<H>`](bare).
pub type Rebuild = fn(RuntimeArgs) -> LocalBoxFuture<anyhow::Result<Bare>>;

/// What a registry, a tool or an operator needs to know about one consumer.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The handler's name: consumer group, Postgres schema (`-` → `_`), `<name>.dlq`.
    pub name: &'static str,
    /// The binary (`[[bin]]` of the consumer's crate).
    pub binary: &'static str,
    /// The default port of its read API, `/healthz`, `/readyz` and `/metrics`.
    pub port: u16,
    /// The topics it reads by default (its handler's `topics()`).
    pub topics: &'static [&'static str],
    /// One line for `--help` and the registry listing.
    pub about: &'static str,
    /// Secrets it reads beyond every consumer's `DATABASE_URL` and `API_TOKENS` (the email
    /// consumer's `SMTP_URL`): the deployment files give them from the Secret.
    pub secrets: &'static [&'static str],
    /// Run its handler alone (see [`Rebuild`]).
    pub rebuild: Rebuild,
    /// Its read API (routes and their OpenAPI description).
    pub api: crate::ReadApi,
    /// Every event field its handler reads (`orderflow contracts`); the contract test
    /// (`tests/contracts.rs`) replaces every other field and expects the same store.
    pub reads: &'static [orderflow_events::contract::Field],
}

impl Spec {
    /// The Postgres schema of its store by default.
    pub fn schema(&self) -> String {
        self.name.replace('-', "_")
    }

    /// The topics as the handler's `topics()` returns them.
    pub fn topic_list(&self) -> Vec<String> {
        self.topics.iter().map(|t| (*t).to_owned()).collect()
    }

    /// `127.0.0.1:<port>`, the default of `--listen`.
    pub fn default_listen(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl std::fmt::Debug for Bare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bare").field("schema", &self.schema).finish_non_exhaustive()
    }
}

/// Consume on a listener until the shutdown future completes.
pub type Serve = Box<dyn FnOnce(TcpListener, BoxFuture<()>) -> BoxFuture<anyhow::Result<()>> + Send>;

/// A handler whose store is connected, ready to consume (no read API, no companions).
pub struct Bare {
    /// The store's pool (search path = its schema).
    pub pool: PgPool,
    /// The store's Postgres schema.
    pub schema: String,
    /// Consume until the future completes, serving `/healthz`, `/readyz` and `/metrics` on the listener.
    pub serve: Serve,
}

/// [`Rebuild`] for a handler that is a plain value (`H::default()`).
pub fn bare<H: Handler + Default>(args: RuntimeArgs) -> LocalBoxFuture<anyhow::Result<Bare>> {
    bare_with(H::default(), args)
}

/// Connect `handler`'s store with `args`, ready to run it alone.
pub fn bare_with<H: Handler>(handler: H, args: RuntimeArgs) -> LocalBoxFuture<anyhow::Result<Bare>> {
    Box::pin(async move {
        let runtime = Runtime::connect(&handler, args).await?;
        let (pool, schema) = (runtime.pool().clone(), runtime.schema().to_owned());
        Ok(Bare {
            pool,
            schema,
            serve: Box::new(move |listener: TcpListener, stop: BoxFuture<()>| -> BoxFuture<anyhow::Result<()>> {
                Box::pin(runtime.run_with_listener(handler, axum::Router::new(), listener, stop))
            }),
        })
    })
}

/// The flags of a consumer binary: the runtime's, `--listen`, and the consumer's own `E`.
#[derive(Debug, Clone, clap::Parser)]
#[command(version)]
pub struct Flags<E: clap::Args> {
    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Address of the read API, /healthz, /readyz and /metrics [default: 127.0.0.1 and the consumer's port].
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen: Option<SocketAddr>,

    #[command(flatten)]
    pub extra: E,
}

/// The flags of a consumer that has none beyond the runtime's and `--listen`.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct NoFlags {}

impl<E: clap::Args> Flags<E> {
    /// Parse `args` (the first is the program) as the flags of `spec`'s binary.
    pub fn parse_for<I, T>(spec: &Spec, args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let command = Self::command().name(spec.binary).about(spec.about);
        let matches = command.try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }
}

/// The whole `main` of a consumer binary: parse its flags (the runtime's, `--listen` with
/// the spec's port, and `E`), set up telemetry under the spec's name, `connect` (which builds
/// the [`Consumer`] from the handler, its read API and `E`), then consume and serve until
/// SIGINT or SIGTERM.
/// Every consumer's `main.rs` is this one call (`consumers/order-history/src/main.rs`).
pub fn main<H, E, F, Fut>(spec: &'static Spec, connect: F) -> anyhow::Result<()>
where
    H: Handler,
    E: clap::Args,
    F: FnOnce(RuntimeArgs, E) -> Fut,
    Fut: Future<Output = anyhow::Result<Consumer<H>>>,
{
    let flags = Flags::<E>::parse_for(spec, std::env::args_os()).unwrap_or_else(|error| error.exit());
    let listen = flags.listen.unwrap_or_else(|| spec.default_listen());
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        // Held until the consumer stops: dropping it flushes the spans not yet exported.
        let _telemetry = orderflow_telemetry::init(spec.name);
        let consumer = connect(flags.runtime, flags.extra).await?;
        anyhow::ensure!(
            consumer.name() == spec.name,
            "the handler is named {}, its CONSUMER {}: use the handler's NAME in both",
            consumer.name(),
            spec.name
        );
        consumer.run(listen, orderflow_runtime::shutdown_signal()).await
    })
}
