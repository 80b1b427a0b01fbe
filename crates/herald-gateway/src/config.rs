//! Settings: defaults, overridden by an optional `herald.toml`, then by `HERALD_*` environment
//! variables, then by command-line flags.
//!
//! A bad value stops start-up with one line that names the setting, where it came from and how
//! to fix it. Secrets are never printed: `Debug` redacts them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::HeaderValue;
use jsonwebtoken::Algorithm;

/// Minimum HS256 secret length, in bytes (the HMAC-SHA256 block of security: 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Every setting, by its file key; the environment variable is `HERALD_` + upper case.
const KEYS: &[&str] = &[
    "bind",
    "database_url",
    "broker",
    "broker_prefix",
    "jwt_secret",
    "jwt_algorithm",
    "jwt_public_key_file",
    "jwt_issuer",
    "jwt_audience",
    "token_ttl",
    "log",
    "log_format",
    "cors_origins",
    "auto_migrate",
    "database_max_connections",
    "ws_queue_frames",
    "ws_queue_bytes",
    "ws_ping_interval",
    "reconcile_interval",
    "web_dir",
    "metrics_bind",
];

/// A bad setting, rendered as one line.
#[derive(Debug, thiserror::Error)]
#[error("invalid {source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

/// Raw values by key, each with the place it came from, before parsing.
#[derive(Default, Clone)]
pub struct RawSettings {
    values: BTreeMap<&'static str, (String, String)>,
}

impl RawSettings {
    /// Collects the file (when present), then the environment, each overriding the last.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut raw = RawSettings::default();

        let (path, explicit) = match config_file {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from("herald.toml"), false),
        };
        if explicit || path.exists() {
            raw.merge_file(&path)?;
        }

        for key in KEYS {
            let var = env_name(key);
            if let Ok(value) = std::env::var(&var) {
                raw.values.insert(key, (value, var));
            }
        }
        Ok(raw)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: source_name.clone(),
            message: format!(
                "cannot read the configuration file ({e}); create it or pass another with --config"
            ),
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError {
            source_name: source_name.clone(),
            message: format!("not valid TOML: {}", e.message()),
        })?;
        for (key, value) in table {
            let Some(known) = KEYS.iter().find(|k| **k == key) else {
                return Err(ConfigError {
                    source_name: format!("{key} in {source_name}"),
                    message: format!("unknown setting; known settings are {}", KEYS.join(", ")),
                });
            };
            let text = match &value {
                toml::Value::Array(items) => items
                    .iter()
                    .map(toml_scalar)
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.join(",")),
                scalar => toml_scalar(scalar),
            }
            .ok_or_else(|| ConfigError {
                source_name: format!("{key} in {source_name}"),
                message: "must be a string, number, boolean or a list of strings".into(),
            })?;
            self.values
                .insert(known, (text, format!("{key} in {source_name}")));
        }
        Ok(())
    }

    /// Sets a value from a command-line flag; flags win over everything else.
    pub fn set_flag(&mut self, key: &'static str, flag: &str, value: Option<String>) {
        if let Some(value) = value {
            self.values.insert(key, (value, flag.to_owned()));
        }
    }

    fn get(&self, key: &'static str) -> Option<(&str, &str)> {
        self.values
            .get(key)
            .map(|(v, s)| (v.as_str(), s.as_str()))
            .filter(|(v, _)| !v.is_empty())
    }

    fn source(&self, key: &'static str) -> String {
        self.values
            .get(key)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| env_name(key))
    }
}

fn toml_scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(n) => Some(n.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn env_name(key: &str) -> String {
    format!("HERALD_{}", key.to_ascii_uppercase())
}

/// Which text format logs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How access tokens are checked.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with a shared secret: Herald issues and verifies.
    Secret(Vec<u8>),
    /// An external identity provider signs; Herald verifies with its public key.
    PublicKey {
        algorithm: Algorithm,
        pem: Vec<u8>,
        path: PathBuf,
    },
    /// Nothing configured yet; `serve --demo` generates a secret, anything else refuses to start.
    Missing,
}

/// Which broker fans events out between instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSetting {
    /// In-process only: one instance.
    Memory,
    /// Redis pub/sub at this URL, shared by every instance.
    Redis { url: String },
}

/// Parsed settings.
#[derive(Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database_url: String,
    pub database_max_connections: u32,
    pub broker: BrokerSetting,
    /// Prefix of the broker's channel names, so that deployments can share one Redis.
    pub broker_prefix: String,
    pub jwt_key: JwtKey,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub token_ttl: Duration,
    pub log: String,
    pub log_format: LogFormat,
    pub cors_origins: Vec<HeaderValue>,
    pub auto_migrate: bool,
    /// Frames a socket may have queued before it is closed as a slow consumer.
    pub ws_queue_frames: u32,
    /// Bytes a socket may have queued before it is closed as a slow consumer.
    pub ws_queue_bytes: u32,
    pub ws_ping_interval: Duration,
    /// How often each group channel compares its last delivered seq with storage.
    pub reconcile_interval: Duration,
    /// Serve the web client from this directory instead of the copy in the binary.
    pub web_dir: Option<PathBuf>,
    /// A separate address for `/metrics`; without it, `/metrics` is on the main listener.
    pub metrics_bind: Option<SocketAddr>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.jwt_key {
            JwtKey::Secret(_) => "HS256 secret (redacted)".to_owned(),
            JwtKey::PublicKey {
                algorithm, path, ..
            } => format!("{algorithm:?} public key {}", path.display()),
            JwtKey::Missing => "none".to_owned(),
        };
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("database_url", &redact_url(&self.database_url))
            .field(
                "broker",
                &match &self.broker {
                    BrokerSetting::Memory => "memory".to_owned(),
                    BrokerSetting::Redis { url } => redact_url(url),
                },
            )
            .field("broker_prefix", &self.broker_prefix)
            .field("jwt_key", &key)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("token_ttl", &self.token_ttl)
            .field("log_format", &self.log_format)
            .field("cors_origins", &self.cors_origins)
            .field("auto_migrate", &self.auto_migrate)
            .field("ws_queue_frames", &self.ws_queue_frames)
            .field("ws_queue_bytes", &self.ws_queue_bytes)
            .field("ws_ping_interval", &self.ws_ping_interval)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("web_dir", &self.web_dir)
            .field("metrics_bind", &self.metrics_bind)
            .finish()
    }
}

/// The URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl Settings {
    /// Parses raw values; the first bad one is the error.
    pub fn parse(raw: &RawSettings) -> Result<Self, ConfigError> {
        let bad = |key: &'static str, message: String| ConfigError {
            source_name: raw.source(key),
            message,
        };

        let bind = match raw.get("bind") {
            Some((v, _)) => v.parse().map_err(|_| {
                bad(
                    "bind",
                    format!("{v:?} is not a socket address; use one such as 127.0.0.1:8000"),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
        };

        let database_url = raw
            .get("database_url")
            .map(|(v, _)| v.to_owned())
            .unwrap_or_else(|| "sqlite://herald.db?mode=rwc".into());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(bad(
                "database_url",
                format!(
                    "{:?} is not supported; use sqlite://FILE?mode=rwc or postgres://USER@HOST/DB",
                    redact_url(&database_url)
                ),
            ));
        }
        let database_max_connections = parse_number(raw, "database_max_connections", 16, 1..=1000)?;

        let broker = match raw.get("broker").map(|(v, _)| v) {
            None | Some("memory") => BrokerSetting::Memory,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                BrokerSetting::Redis {
                    url: url.to_owned(),
                }
            }
            Some(other) => {
                return Err(bad(
                    "broker",
                    format!(
                        "{:?} is not supported; use memory for one instance or redis://HOST:PORT/DB to share fan-out between instances",
                        redact_url(other)
                    ),
                ));
            }
        };
        let broker_prefix = raw
            .get("broker_prefix")
            .map(|(v, _)| v.to_owned())
            .unwrap_or_else(|| "herald:".into());

        let token_ttl =
            parse_duration_setting(raw, "token_ttl", Duration::from_secs(3600), "30m or 1h")?;
        let ws_queue_frames = parse_number(raw, "ws_queue_frames", 1024, 1..=1_000_000)?;
        let ws_queue_bytes = parse_number(
            raw,
            "ws_queue_bytes",
            4 * 1024 * 1024,
            1024..=1024 * 1024 * 1024,
        )?;
        let ws_ping_interval =
            parse_duration_setting(raw, "ws_ping_interval", Duration::from_secs(30), "30s")?;
        let reconcile_interval =
            parse_duration_setting(raw, "reconcile_interval", Duration::from_secs(2), "2s")?;
        for (key, value) in [
            ("ws_ping_interval", ws_ping_interval),
            ("reconcile_interval", reconcile_interval),
        ] {
            if value < Duration::from_millis(100) {
                return Err(bad(key, "must be at least 100ms".into()));
            }
        }

        let jwt_key = parse_jwt_key(raw)?;

        let log_format = match raw.get("log_format").map(|(v, _)| v) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(bad(
                    "log_format",
                    format!("{other:?} is not a log format; use text or json"),
                ));
            }
        };

        let mut cors_origins = Vec::new();
        if let Some((v, _)) = raw.get("cors_origins") {
            for origin in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/');
                let value = HeaderValue::from_str(origin).ok().filter(|_| valid).ok_or_else(|| {
                    bad("cors_origins", format!("{origin:?} is not an origin; use a comma-separated list such as https://ops.example.com"))
                })?;
                cors_origins.push(value);
            }
        }

        let web_dir = match raw.get("web_dir") {
            Some((v, _)) if Path::new(v).join("index.html").is_file() => Some(PathBuf::from(v)),
            Some((v, _)) => {
                return Err(bad(
                    "web_dir",
                    format!(
                        "{v:?} has no index.html; point it at crates/herald-gateway/web or unset it"
                    ),
                ));
            }
            None => None,
        };

        let metrics_bind = match raw.get("metrics_bind") {
            Some((v, _)) => Some(v.parse().map_err(|_| {
                bad(
                    "metrics_bind",
                    format!("{v:?} is not a socket address; use one such as 127.0.0.1:9100"),
                )
            })?),
            None => None,
        };

        let auto_migrate = match raw.get("auto_migrate").map(|(v, _)| v.to_ascii_lowercase()) {
            None => true,
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => true,
            Some(v) if matches!(v.as_str(), "false" | "0" | "no") => false,
            Some(v) => {
                return Err(bad(
                    "auto_migrate",
                    format!("{v:?} is not a boolean; use true or false"),
                ));
            }
        };

        Ok(Settings {
            bind,
            database_url,
            database_max_connections,
            broker,
            broker_prefix,
            jwt_key,
            jwt_issuer: raw.get("jwt_issuer").map(|(v, _)| v.to_owned()),
            jwt_audience: raw.get("jwt_audience").map(|(v, _)| v.to_owned()),
            token_ttl,
            log: raw
                .get("log")
                .map(|(v, _)| v.to_owned())
                .unwrap_or_else(|| "info,sqlx=warn".into()),
            log_format,
            cors_origins,
            auto_migrate,
            ws_queue_frames,
            ws_queue_bytes,
            ws_ping_interval,
            reconcile_interval,
            web_dir,
            metrics_bind,
        })
    }
}

fn parse_jwt_key(raw: &RawSettings) -> Result<JwtKey, ConfigError> {
    let bad = |key: &'static str, message: String| ConfigError {
        source_name: raw.source(key),
        message,
    };

    let algorithm = match raw.get("jwt_algorithm").map(|(v, _)| v) {
        None | Some("HS256") => Algorithm::HS256,
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        Some("EdDSA") => Algorithm::EdDSA,
        Some(other) => {
            return Err(bad(
                "jwt_algorithm",
                format!("{other:?} is not supported; use HS256, RS256, ES256 or EdDSA"),
            ));
        }
    };

    if algorithm == Algorithm::HS256 {
        if raw.get("jwt_public_key_file").is_some() {
            return Err(bad(
                "jwt_public_key_file",
                "is only used with HERALD_JWT_ALGORITHM=RS256, ES256 or EdDSA".into(),
            ));
        }
        return match raw.get("jwt_secret") {
            Some((secret, _)) if secret.len() >= MIN_SECRET_BYTES => {
                Ok(JwtKey::Secret(secret.as_bytes().to_vec()))
            }
            Some((secret, _)) => Err(bad(
                "jwt_secret",
                format!(
                    "must be at least {MIN_SECRET_BYTES} bytes (got {}); generate one with `openssl rand -base64 48`",
                    secret.len()
                ),
            )),
            None => Ok(JwtKey::Missing),
        };
    }

    if raw.get("jwt_secret").is_some() {
        return Err(bad(
            "jwt_secret",
            format!("is not used with {algorithm:?}; unset it or set HERALD_JWT_ALGORITHM=HS256"),
        ));
    }
    let Some((path, _)) = raw.get("jwt_public_key_file") else {
        return Err(bad(
            "jwt_public_key_file",
            format!(
                "is required with {algorithm:?}: set it to the identity provider's PEM public key"
            ),
        ));
    };
    let pem = std::fs::read(path)
        .map_err(|e| bad("jwt_public_key_file", format!("cannot read {path:?}: {e}")))?;
    let check = match algorithm {
        Algorithm::RS256 => jsonwebtoken::DecodingKey::from_rsa_pem(&pem).map(drop),
        Algorithm::ES256 => jsonwebtoken::DecodingKey::from_ec_pem(&pem).map(drop),
        _ => jsonwebtoken::DecodingKey::from_ed_pem(&pem).map(drop),
    };
    check.map_err(|e| {
        bad(
            "jwt_public_key_file",
            format!("{path:?} is not a {algorithm:?} public key in PEM format: {e}"),
        )
    })?;
    Ok(JwtKey::PublicKey {
        algorithm,
        pem,
        path: PathBuf::from(path),
    })
}

fn parse_duration_setting(
    raw: &RawSettings,
    key: &'static str,
    default: Duration,
    example: &str,
) -> Result<Duration, ConfigError> {
    let Some((v, _)) = raw.get(key) else {
        return Ok(default);
    };
    parse_duration(v).ok_or_else(|| ConfigError {
        source_name: raw.source(key),
        message: format!("{v:?} is not a duration; use one such as {example}"),
    })
}

fn parse_number(
    raw: &RawSettings,
    key: &'static str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ConfigError> {
    let Some((v, _)) = raw.get(key) else {
        return Ok(default);
    };
    v.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| ConfigError {
            source_name: raw.source(key),
            message: format!(
                "{v:?} is not a number from {} to {}",
                range.start(),
                range.end()
            ),
        })
}

/// Parses durations such as `90s`, `30m`, `1h` or `1h 30m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).ok()?,
    };
    (!duration.is_zero()).then_some(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&'static str, &str)]) -> RawSettings {
        let mut raw = RawSettings::default();
        for (key, value) in pairs {
            raw.set_flag(key, &format!("--{key}"), Some((*value).to_owned()));
        }
        raw
    }

    #[test]
    fn defaults() {
        let settings = Settings::parse(&RawSettings::default()).unwrap();
        assert_eq!(settings.bind.to_string(), "127.0.0.1:8000");
        assert_eq!(settings.database_url, "sqlite://herald.db?mode=rwc");
        assert_eq!(settings.token_ttl, Duration::from_secs(3600));
        assert!(matches!(settings.jwt_key, JwtKey::Missing));
        assert!(settings.auto_migrate);
    }

    #[test]
    fn short_secret_names_the_setting() {
        let error = Settings::parse(&raw(&[("jwt_secret", "short")])).unwrap_err();
        assert_eq!(error.source_name, "--jwt_secret");
        assert!(
            error.message.contains("at least 32 bytes"),
            "{}",
            error.message
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        for (key, value) in [
            ("bind", "nowhere"),
            ("token_ttl", "soon"),
            ("log_format", "xml"),
            ("broker", "kafka://x"),
            ("cors_origins", "example.com"),
            ("auto_migrate", "maybe"),
            ("jwt_algorithm", "HS512"),
            ("database_url", "mysql://x"),
        ] {
            assert!(
                Settings::parse(&raw(&[(key, value)])).is_err(),
                "{key}={value} should be rejected"
            );
        }
    }

    #[test]
    fn asymmetric_algorithm_needs_a_key_file() {
        let error = Settings::parse(&raw(&[("jwt_algorithm", "RS256")])).unwrap_err();
        assert!(error.message.contains("is required"), "{}", error.message);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("later"), None);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:pw@db/herald"),
            "postgres://app:***@db/herald"
        );
        assert_eq!(redact_url("sqlite://herald.db"), "sqlite://herald.db");
    }
}
