use std::fmt;
use std::str::FromStr;

use rdkafka::ClientConfig;

/// Where the local stack's broker listens; a real cluster replaces it through `KAFKA_BROKERS`.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// One `key=value` librdkafka property given with `--kafka-option`.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOption {
    pub key: String,
    pub value: String,
}

impl FromStr for KafkaOption {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("expected key=value (a librdkafka property), got `{}`", redact_whole(s)))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
            return Err(format!("`{key}` is not a librdkafka property name (letters, digits, dots)"));
        }
        Ok(KafkaOption { key: key.to_owned(), value: value.to_owned() })
    }
}

impl fmt::Debug for KafkaOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, display_value(&self.key, &self.value))
    }
}

/// Connection settings shared by every binary (flatten into a clap `Parser`).
#[derive(Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma separated.
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,

    /// Extra librdkafka property, repeatable (e.g. `security.protocol=SASL_SSL`). Environment
    /// variables `KAFKA_SASL_*`, `KAFKA_SSL_*` and `KAFKA_SECURITY_PROTOCOL` are passed
    /// through the same way (`KAFKA_SASL_USERNAME` becomes `sasl.username`).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub options: Vec<KafkaOption>,
}

impl fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaArgs")
            .field("brokers", &self.brokers)
            .field("options", &self.options)
            .field("env_options", &env_options())
            .finish()
    }
}

impl Default for KafkaArgs {
    fn default() -> Self {
        KafkaArgs { brokers: DEFAULT_BROKERS.to_owned(), options: Vec::new() }
    }
}

impl KafkaArgs {
    pub fn with_brokers(brokers: impl Into<String>) -> Self {
        KafkaArgs { brokers: brokers.into(), options: Vec::new() }
    }

    /// The base client configuration: brokers, IPv4-first resolution, pass-through options.
    /// Options from the environment come first so that explicit `--kafka-option`s win.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            // `localhost` may resolve to ::1 first; the local broker only listens on IPv4.
            .set("broker.address.family", "v4");
        for option in env_options().iter().chain(self.options.iter()) {
            config.set(&option.key, &option.value);
        }
        config
    }

    /// Producer configuration with the delivery guarantee of docs/producing.md: an acknowledged
    /// record is on every in-sync replica (`acks=all`) and a retried send is never
    /// duplicated in the log (`enable.idempotence=true`). lz4 because the local broker does
    /// not re-encode snappy.
    pub fn producer_config(&self) -> ClientConfig {
        with_defaults(
            self.client_config(),
            &[("acks", "all"), ("enable.idempotence", "true"), ("compression.type", "lz4"), ("linger.ms", "5")],
        )
    }

    /// Consumer configuration for a group: no auto commit, no automatic offset store (the
    /// caller decides when work is durable), cooperative rebalancing.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = with_defaults(
            self.client_config(),
            &[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("partition.assignment.strategy", "cooperative-sticky"),
            ],
        );
        config.set("group.id", group_id);
        config
    }
}

/// `config` plus each default it does not name: explicit settings win. (Never rebuild a
/// config from `ClientConfig::config_map`: it masks `sasl.password` and the other secrets,
/// so the copy would log in with the mask as its password.)
fn with_defaults(mut config: ClientConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(*key, *value);
        }
    }
    config
}

/// librdkafka properties taken from `KAFKA_SASL_*`, `KAFKA_SSL_*`, `KAFKA_SECURITY_PROTOCOL`
/// and `KAFKA_CLIENT_ID` environment variables.
fn env_options() -> Vec<KafkaOption> {
    let mut options: Vec<KafkaOption> = std::env::vars()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("KAFKA_")?;
            let passthrough = rest.starts_with("SASL_")
                || rest.starts_with("SSL_")
                || rest == "SECURITY_PROTOCOL"
                || rest == "CLIENT_ID";
            passthrough.then(|| KafkaOption { key: rest.to_ascii_lowercase().replace('_', "."), value })
        })
        .collect();
    options.sort_by(|a, b| a.key.cmp(&b.key));
    options
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas"].iter().any(|s| key.contains(s))
}

fn display_value<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret_key(key) { "[redacted]" } else { value }
}

fn redact_whole(s: &str) -> String {
    if is_secret_key(s) { "[redacted]".to_owned() } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_option_and_rejects_malformed_ones() {
        let option: KafkaOption = "security.protocol=SASL_SSL".parse().unwrap();
        assert_eq!(option.key, "security.protocol");
        assert_eq!(option.value, "SASL_SSL");
        let with_equals: KafkaOption = "sasl.jaas.config=a=b".parse().unwrap();
        assert_eq!(with_equals.value, "a=b");
        assert!("no-equals-sign".parse::<KafkaOption>().unwrap_err().contains("key=value"));
        assert!("bad key!=1".parse::<KafkaOption>().unwrap_err().contains("not a librdkafka property"));
    }

    #[test]
    fn debug_output_never_shows_secret_values() {
        let args = KafkaArgs {
            brokers: "b:9092".into(),
            options: vec!["sasl.password=hunter2".parse().unwrap(), "ssl.key.password=s3cret".parse().unwrap()],
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sasl.password=[redacted]"), "{shown}");
        let malformed = "sasl.password:hunter2".parse::<KafkaOption>().unwrap_err();
        assert!(!malformed.contains("hunter2"), "{malformed}");
    }

    #[test]
    fn explicit_options_override_producer_defaults() {
        let args = KafkaArgs { brokers: "b:9092".into(), options: vec!["linger.ms=0".parse().unwrap()] };
        let config = args.producer_config();
        assert_eq!(config.get("linger.ms"), Some("0"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }

    #[test]
    fn producer_and_consumer_configs_keep_the_real_secret_values() {
        let args = KafkaArgs {
            brokers: "b:9092".into(),
            options: vec!["sasl.username=u".parse().unwrap(), "sasl.password=hunter2".parse().unwrap()],
        };
        assert_eq!(args.producer_config().get("sasl.password"), Some("hunter2"));
        assert_eq!(args.consumer_config("g").get("sasl.password"), Some("hunter2"));
    }
}
