//! The `email` binary's own flags and environment (beyond the runtime's and `--listen`).

use std::fmt;
use std::time::Duration;

/// How the sender task delivers the outbox.
#[derive(Debug, Clone, clap::Args)]
pub struct SenderArgs {
    /// SMTP server, `smtp://[user:password@]host:port` (credentials are never logged).
    #[arg(long, env = "SMTP_URL", default_value = "smtp://127.0.0.1:1025", hide_env_values = true)]
    pub smtp_url: RawSmtpUrl,

    /// Sender address of the confirmations.
    #[arg(long, env = "EMAIL_FROM", default_value = "orderflow <orders@orderflow.example>")]
    pub email_from: String,

    /// Attempts before an email is marked `failed`.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub email_max_attempts: u32,

    /// First retry delay in milliseconds; doubles per attempt up to `--email-retry-max-ms`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub email_retry_base_ms: u64,

    /// Longest retry delay in milliseconds.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub email_retry_max_ms: u64,

    /// How often the sender looks for due emails, in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub email_poll_ms: u64,

    /// Emails in flight at once (each on its own pooled SMTP connection). One at a time, the
    /// delivery rate is one over the server's latency per message.
    #[arg(long, env = "EMAIL_SEND_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub email_send_concurrency: u32,

    /// Consecutive outage signals (connection refused or reset, timeout, TLS failure, a 4xx
    /// answer) that open the SMTP circuit: emails then wait for the server, and no attempt is
    /// counted for them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub smtp_breaker_failures: u32,

    /// How long the circuit stays open before one email probes the server, in milliseconds;
    /// doubles after each failed probe up to `--smtp-breaker-open-max-ms`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub smtp_breaker_open_ms: u64,

    /// Longest open period between two probes, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub smtp_breaker_open_max_ms: u64,
}

impl SenderArgs {
    /// Defaults (for tests and embedding) delivering to `smtp_url`.
    pub fn new(smtp_url: &str) -> anyhow::Result<Self> {
        smtp_url.parse::<SmtpUrl>()?;
        Ok(SenderArgs {
            smtp_url: RawSmtpUrl(smtp_url.to_owned()),
            email_from: "orderflow <orders@orderflow.example>".into(),
            email_max_attempts: 8,
            email_retry_base_ms: 1000,
            email_retry_max_ms: 300_000,
            email_poll_ms: 250,
            email_send_concurrency: 8,
            smtp_breaker_failures: 5,
            smtp_breaker_open_ms: 1000,
            smtp_breaker_open_max_ms: 30_000,
        })
    }

    /// Delay before attempt `attempts + 1`, after `attempts` failed ones.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let ms = self.email_retry_base_ms.saturating_mul(1u64 << exponent).min(self.email_retry_max_ms);
        Duration::from_millis(ms)
    }
}

/// `SMTP_URL` as given. Parsed into an [`SmtpUrl`] after clap, because clap's own error
/// for an invalid value would print the value, password included.
#[derive(Clone)]
pub struct RawSmtpUrl(String);

impl RawSmtpUrl {
    pub fn parse(&self) -> anyhow::Result<SmtpUrl> {
        self.0.parse()
    }
}

impl std::str::FromStr for RawSmtpUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(RawSmtpUrl(s.to_owned()))
    }
}

impl fmt::Debug for RawSmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parse() {
            Ok(url) => fmt::Debug::fmt(&url, f),
            Err(_) => f.write_str("<invalid SMTP_URL>"),
        }
    }
}

/// Where to deliver: parsed from `smtp://[user:password@]host[:port]`; `Debug`/`Display`
/// show only the host and port.
#[derive(Clone)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    /// (user, password), percent-decoded; never printed.
    credentials: Option<(String, String)>,
}

impl SmtpUrl {
    /// The credentials for the transport (never for a log).
    pub fn credentials(&self) -> Option<(String, String)> {
        self.credentials.clone()
    }
}

impl std::str::FromStr for SmtpUrl {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        const EXAMPLE: &str = "like smtp://127.0.0.1:1025 or smtp://user:password@mail.example:587";
        anyhow::ensure!(s.len() <= 2048, "SMTP_URL is longer than 2048 bytes");
        // The parse error never echoes the URL: it may hold a password.
        let url = url::Url::parse(s).map_err(|e| anyhow::anyhow!("SMTP_URL is not a URL ({e}); {EXAMPLE}"))?;
        anyhow::ensure!(
            url.scheme() == "smtp",
            "SMTP_URL must use smtp:// (TLS is not built in; use a local relay), {EXAMPLE}"
        );
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| anyhow::anyhow!("SMTP_URL names no host, {EXAMPLE}"))?;
        let decode = |v: &str| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
        let credentials =
            (!url.username().is_empty()).then(|| (decode(url.username()), decode(url.password().unwrap_or_default())));
        Ok(SmtpUrl { host: host.to_owned(), port: url.port().unwrap_or(25), credentials })
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "smtp://{}:{}", self.host, self.port)
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_credentials_never_show_in_debug_output() {
        let url: SmtpUrl = "smtp://mailer:s3cret@mail.example:2525".parse().unwrap();
        assert_eq!(format!("{url:?} {url}"), "smtp://mail.example:2525 smtp://mail.example:2525");
        let args = SenderArgs::new("smtp://mailer:s3cret@mail.example:2525").unwrap();
        assert_eq!(format!("{:?}", args.smtp_url), "smtp://mail.example:2525");
        let invalid = SenderArgs { smtp_url: "smtps://mailer:s3cret@mail.example".parse().unwrap(), ..args };
        assert!(!format!("{invalid:?}").contains("s3cret"));
    }

    #[test]
    fn non_smtp_urls_are_rejected_with_an_example() {
        let error = "http://mail:25".parse::<SmtpUrl>().unwrap_err().to_string();
        assert!(error.contains("smtp://127.0.0.1:1025"), "{error}");
        let error = "smtp://user:p@ss word@".parse::<SmtpUrl>().unwrap_err().to_string();
        assert!(!error.contains("p@ss"), "{error}");
        let url: SmtpUrl = "smtp://us%40er:p%3Ass@mail.example".parse().unwrap();
        assert_eq!((url.port, url.credentials()), (25, Some(("us@er".into(), "p:ss".into()))));
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_the_cap() {
        let mut args = SenderArgs::new("smtp://x:1").unwrap();
        args.email_retry_base_ms = 100;
        args.email_retry_max_ms = 1000;
        let delays: Vec<u64> = (1..=6).map(|a| args.backoff(a).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }
}
