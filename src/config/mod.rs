//! Why one file (1,100 lines, 228 of them tests): one struct per `[section]` of the
//! TOML file, in the file's order, with the overlay and check rules they share; split by
//! section, each part would need the shared overlay and `validate` anyway.
//!
//! Configuration: the embedded, documented defaults (`ferrocast.toml` beside this file),
//! overlaid by the user's TOML file, overlaid by `FERROCAST_*` environment variables.
//!
//! Loading is a pure function of the file text and the environment, so every rule is unit-tested.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Value;

/// The documented defaults, embedded so the binary runs with no file at all.
pub const DEFAULTS_TOML: &str = include_str!("ferrocast.toml");

/// Environment variable that names the config file.
pub const CONFIG_ENV: &str = "FERROCAST_CONFIG";
const ENV_PREFIX: &str = "FERROCAST_";

/// The effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub rtmp: RtmpConfig,
    pub live: LiveConfig,
    pub webrtc: WebrtcConfig,
    pub uploads: UploadsConfig,
    pub jobs: JobsConfig,
    pub delivery: DeliveryConfig,
    pub playback: PlaybackConfig,
    pub licences: LicencesConfig,
    pub analytics: AnalyticsConfig,
    pub commerce: CommerceConfig,
    pub rate_limits: RateLimitsConfig,
    pub webhooks: WebhooksConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub keys: KeysConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub max_body_bytes: usize,
    pub request_timeout_s: u64,
    pub shutdown_grace_s: u64,
    pub header_read_timeout_s: u64,
    pub idle_timeout_s: u64,
    pub max_connections: usize,
    pub max_pending_per_ip: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub handshake_timeout_s: u64,
    pub idle_timeout_s: u64,
    pub max_connections: usize,
    pub max_pending_per_ip: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    pub queue_batches: usize,
    pub flush_s: u64,
    pub raw_retention_days: u64,
    pub max_open_views: usize,
    /// Beacons are checked, answered and dropped: `make bench`'s ceiling.
    pub discard_beacons: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommerceConfig {
    /// Payment provider base URLs may be plain `http://` (tests' local fakes only).
    pub allow_plain_http_providers: bool,
    /// A subscription's access lasts this long past the end of the period paid (a renewal
    /// that is late, or retried by the bank).
    pub subscription_grace_s: u64,
}

/// API requests per minute for each tier of tenant (per API key, token bucket).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// The tier of a tenant made without one.
    pub default_tier: String,
    pub free_per_min: u32,
    pub starter_per_min: u32,
    pub pro_per_min: u32,
    pub enterprise_per_min: u32,
}

/// Webhooks out: how deliveries are sent, retried and given up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Endpoints may be on loopback, private, link-local or metadata addresses (tests and
    /// on-premise receivers). Off, such URLs are refused, also after DNS and on redirects.
    pub allow_private_targets: bool,
    /// The first retry's delay in milliseconds; each next one is three times longer
    /// (with jitter), up to `retry_max_s`.
    pub retry_base_ms: u64,
    pub retry_max_s: u64,
    /// A delivery is retried for this long after its event before it is given up.
    pub retry_for_s: u64,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after_s: u64,
    /// An attempt that takes longer fails.
    pub timeout_s: u64,
    /// Deliveries in flight at once, per node.
    pub concurrency: usize,
    /// Events and deliveries are kept this long once over.
    pub retention_days: u64,
}

/// The tiers, by name.
pub const TIERS: [&str; 4] = ["free", "starter", "pro", "enterprise"];

impl RateLimitsConfig {
    /// Requests a minute for `tier`; none for a name that is no tier.
    pub fn per_min(&self, tier: &str) -> Option<u32> {
        Some(match tier {
            "free" => self.free_per_min,
            "starter" => self.starter_per_min,
            "pro" => self.pro_per_min,
            "enterprise" => self.enterprise_per_min,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    pub window_segments: usize,
    pub key_rotation_segments: u64,
    pub upload_queue_segments: usize,
    pub stall_timeout_s: u64,
    pub ended_retention_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    pub max_size_bytes: u64,
    pub tenant_quota_bytes: u64,
    pub expiry_hours: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub lease_s: u64,
    pub poster_time_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub redirect_segments: bool,
    pub redirect_expiry_s: u64,
    pub cache_mib: u64,
    pub hlsjs_path: String,
    pub swagger_ui_dir: String,
    pub node_modules_dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Local,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    pub max_presign_s: u64,
    pub local: LocalStorageConfig,
    pub s3: S3Config,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStorageConfig {
    pub dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub endpoint: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub create_bucket: bool,
    pub multipart_threshold_bytes: u64,
    pub part_size_bytes: u64,
    pub request_timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub dir: PathBuf,
    pub provider: KeyProvider,
    pub master_key: Secret,
    pub previous_master_keys: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProvider {
    File,
    Env,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebrtcConfig {
    pub stun_server: String,
    pub turn_servers: String,
    pub port_min: u16,
    pub port_max: u16,
    pub nat_1to1_ips: String,
    pub interface_ips: String,
    pub keyframe_interval_s: u64,
    pub simulate_loss_every: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybackConfig {
    pub max_token_lifetime_s: u64,
    pub country_header: String,
    pub geoip_mmdb: String,
    pub client_ip_header: String,
    pub key_rate_per_ip: f64,
    pub key_burst_per_ip: u32,
    pub key_rate_per_viewer: f64,
    pub key_burst_per_viewer: u32,
    pub thumbnail_renders_per_ip: f64,
    pub thumbnail_render_burst_per_ip: u32,
}

/// Licence servers of DRM vendors that `POST /licenses/{system}/{playback_id}` forwards
/// entitled viewers' challenges to (empty: that system is not served).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicencesConfig {
    pub widevine_url: String,
    pub playready_url: String,
    pub fairplay_url: String,
    /// `Name: value`, sent with every forwarded challenge (the vendor's credential).
    pub auth_header: Secret,
    /// A SPEKE v2 key server CMAF outputs take their keys (and `pssh`) from; empty: none.
    pub speke_url: String,
    pub speke_auth_header: Secret,
    /// DRM systems asked of the key server: `widevine`, `playready`, `fairplay`.
    pub speke_systems: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub key: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

/// A secret string: `Debug` and `Serialize` never show it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

/// A database URL; its password is redacted when printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("[redacted]"));
                u.to_string()
            }
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Why the configuration cannot be used; always names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// The items of a comma-separated setting, trimmed, empty ones skipped.
pub fn comma_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

impl ConfigError {
    fn invalid(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            origin: origin.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// The embedded defaults alone.
    pub fn defaults() -> Self {
        Self::from_sources(None, std::iter::empty()).expect("embedded defaults are valid")
    }

    /// Loads the file named by `--config`, else `FERROCAST_CONFIG`, else `./ferrocast.toml`
    /// when it exists, then applies the process environment.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .or_else(|| {
                let p = PathBuf::from("ferrocast.toml");
                p.exists().then_some(p)
            });
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some((path, text))
            }
            None => None,
        };
        let env = std::env::vars().filter(|(k, _)| k != CONFIG_ENV);
        Self::from_sources(file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), env)
    }

    /// Builds the configuration from an optional file (path, text) and environment pairs.
    pub fn from_sources(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut merged: Value = DEFAULTS_TOML.parse().expect("embedded defaults parse");
        let mut origins: BTreeMap<String, String> = BTreeMap::new();
        if let Some((path, text)) = file {
            let user: Value = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.message().to_string(),
                })?;
            merge(
                &mut merged,
                user,
                "",
                &mut origins,
                &format!("{}", path.display()),
            );
        }
        let settings = flatten_settings(&DEFAULTS_TOML.parse().expect("embedded defaults parse"));
        for (name, raw) in env {
            let Some(suffix) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((dotted, default)) = settings.get(&suffix.to_ascii_lowercase()) else {
                return Err(ConfigError::invalid(
                    &name,
                    "no such setting (see `ferrocast config --defaults` for the list)",
                ));
            };
            let value = parse_env_value(&raw, default)
                .map_err(|m| ConfigError::invalid(format!("{name} ({dotted})"), m))?;
            set_path(&mut merged, dotted, value);
            origins.insert(dotted.clone(), format!("{name} ({dotted})"));
        }
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = e.path().to_string();
            let origin = origins.get(&path).cloned().unwrap_or(path);
            ConfigError::invalid(origin, e.inner().to_string())
        })?;
        config.validate(&origins)?;
        Ok(config)
    }

    fn validate(&self, origins: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let at = |key: &str| origins.get(key).cloned().unwrap_or_else(|| key.to_string());
        let db = self.database.url.expose();
        if !(db.is_empty()
            || db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                at("database.url"),
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if self
            .rate_limits
            .per_min(&self.rate_limits.default_tier)
            .is_none()
        {
            return Err(ConfigError::invalid(
                at("rate_limits.default_tier"),
                format!("must be one of {}", TIERS.join(", ")),
            ));
        }
        for tier in TIERS {
            if self.rate_limits.per_min(tier) == Some(0) {
                return Err(ConfigError::invalid(
                    at(&format!("rate_limits.{tier}_per_min")),
                    "must be at least 1",
                ));
            }
        }
        for (key, value) in [
            ("webhooks.retry_base_ms", self.webhooks.retry_base_ms),
            ("webhooks.timeout_s", self.webhooks.timeout_s),
            ("webhooks.concurrency", self.webhooks.concurrency as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(at(key), "must be at least 1"));
            }
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                at("database.max_connections"),
                "must be at least 1",
            ));
        }
        if !self.http.public_url.is_empty() {
            match url::Url::parse(&self.http.public_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(ConfigError::invalid(
                        at("http.public_url"),
                        "must be an http:// or https:// URL",
                    ));
                }
            }
        }
        let admin = self.admin.key.expose();
        if !admin.is_empty() && (admin.len() < 16 || admin.chars().any(char::is_whitespace)) {
            return Err(ConfigError::invalid(
                at("admin.key"),
                "must be at least 16 characters with no whitespace",
            ));
        }
        if self.storage.backend == StorageBackend::S3 {
            let s3 = &self.storage.s3;
            if s3.bucket.is_empty() {
                return Err(ConfigError::invalid(
                    at("storage.s3.bucket"),
                    "required when storage.backend = \"s3\"",
                ));
            }
            if !s3.endpoint.is_empty() && url::Url::parse(&s3.endpoint).is_err() {
                return Err(ConfigError::invalid(at("storage.s3.endpoint"), "not a URL"));
            }
            if s3.access_key_id.is_empty() != s3.secret_access_key.is_empty() {
                return Err(ConfigError::invalid(
                    at("storage.s3.secret_access_key"),
                    "access_key_id and secret_access_key must be set together",
                ));
            }
            if s3.part_size_bytes < 5 * 1024 * 1024 {
                return Err(ConfigError::invalid(
                    at("storage.s3.part_size_bytes"),
                    "S3 needs parts of at least 5242880 bytes (5 MiB)",
                ));
            }
        }
        if !self.rtmp.public_url.is_empty() && !self.rtmp.public_url.starts_with("rtmp://") {
            return Err(ConfigError::invalid(
                at("rtmp.public_url"),
                "must be an rtmp:// URL",
            ));
        }
        if self.keys.provider == KeyProvider::Env && self.keys.master_key.is_empty() {
            return Err(ConfigError::invalid(
                at("keys.master_key"),
                "required when keys.provider = \"env\" (64 hex digits)",
            ));
        }
        let hex_keys = |s: &str| {
            s.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .all(|k| k.len() == 64 && k.chars().all(|c| c.is_ascii_hexdigit()))
        };
        for (name, value) in [
            ("keys.master_key", &self.keys.master_key),
            ("keys.previous_master_keys", &self.keys.previous_master_keys),
        ] {
            if !hex_keys(value.expose()) {
                return Err(ConfigError::invalid(
                    at(name),
                    "must be 64 hex digits per key",
                ));
            }
        }
        if self.webrtc.port_min > self.webrtc.port_max {
            return Err(ConfigError::invalid(
                at("webrtc.port_min"),
                "must not be above webrtc.port_max",
            ));
        }
        if self.webrtc.keyframe_interval_s == 0 {
            return Err(ConfigError::invalid(
                at("webrtc.keyframe_interval_s"),
                "must be at least 1 (browsers send H.264 keyframes only when asked)",
            ));
        }
        if !self.webrtc.stun_server.is_empty() && !self.webrtc.stun_server.starts_with("stun://") {
            return Err(ConfigError::invalid(
                at("webrtc.stun_server"),
                "must be a stun://HOST:PORT URL",
            ));
        }
        for (name, value) in [
            ("webrtc.nat_1to1_ips", &self.webrtc.nat_1to1_ips),
            ("webrtc.interface_ips", &self.webrtc.interface_ips),
        ] {
            if let Some(bad) = comma_list(value).find(|ip| ip.parse::<std::net::IpAddr>().is_err())
            {
                return Err(ConfigError::invalid(
                    at(name),
                    format!("{bad:?} is not an IP address"),
                ));
            }
        }
        for (name, value) in [
            ("licences.widevine_url", &self.licences.widevine_url),
            ("licences.playready_url", &self.licences.playready_url),
            ("licences.fairplay_url", &self.licences.fairplay_url),
            ("licences.speke_url", &self.licences.speke_url),
        ] {
            let ok = value.is_empty()
                || url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(ConfigError::invalid(
                    at(name),
                    "must be an http(s) URL or empty",
                ));
            }
        }
        let auth = self.licences.auth_header.expose();
        if !auth.is_empty()
            && !auth.split_once(':').is_some_and(|(name, _)| {
                !name.trim().is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        {
            return Err(ConfigError::invalid(
                at("licences.auth_header"),
                "must be \"Name: value\" or empty",
            ));
        }
        if self.playback.max_token_lifetime_s == 0 {
            return Err(ConfigError::invalid(
                at("playback.max_token_lifetime_s"),
                "must be at least 1",
            ));
        }
        for (name, rate) in [
            ("playback.key_rate_per_ip", self.playback.key_rate_per_ip),
            (
                "playback.key_rate_per_viewer",
                self.playback.key_rate_per_viewer,
            ),
            (
                "playback.thumbnail_renders_per_ip",
                self.playback.thumbnail_renders_per_ip,
            ),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::invalid(at(name), "must be more than 0"));
            }
        }
        for (name, value) in [
            (
                "analytics.queue_batches",
                self.analytics.queue_batches as u64,
            ),
            ("analytics.flush_s", self.analytics.flush_s),
            (
                "analytics.max_open_views",
                self.analytics.max_open_views as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(at(name), "must be at least 1"));
            }
        }
        if self.analytics.flush_s > 60 {
            // Peak concurrent viewers are sampled at each flush: every minute needs one.
            return Err(ConfigError::invalid(
                at("analytics.flush_s"),
                "must be 60 at most",
            ));
        }
        if self.jobs.max_attempts == 0 {
            return Err(ConfigError::invalid(
                at("jobs.max_attempts"),
                "must be at least 1",
            ));
        }
        if self.jobs.poster_time_s.is_nan() || self.jobs.poster_time_s < 0.0 {
            return Err(ConfigError::invalid(
                at("jobs.poster_time_s"),
                "must be 0 or more seconds",
            ));
        }
        if self.jobs.lease_s < 5 {
            return Err(ConfigError::invalid(
                at("jobs.lease_s"),
                "must be at least 5",
            ));
        }
        if self.live.window_segments < 3 {
            return Err(ConfigError::invalid(
                at("live.window_segments"),
                "must be at least 3",
            ));
        }
        if self.live.upload_queue_segments == 0 {
            return Err(ConfigError::invalid(
                at("live.upload_queue_segments"),
                "must be at least 1",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(ConfigError::invalid(at("log.filter"), e.to_string()));
        }
        Ok(())
    }

    /// The database URL in use: the configured one, or the SQLite file under `data_dir`.
    pub fn database_url(&self) -> String {
        let url = self.database.url.expose();
        if url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ferrocast.db").display()
            )
        } else {
            url.to_string()
        }
    }

    /// The URL publishers push to, without the stream key.
    pub fn rtmp_url(&self, bound: SocketAddr) -> String {
        if self.rtmp.public_url.is_empty() {
            format!("rtmp://{bound}/live")
        } else {
            self.rtmp.public_url.trim_end_matches('/').to_string()
        }
    }

    /// The folder of the local object store.
    pub fn local_storage_dir(&self) -> PathBuf {
        if self.storage.local.dir.is_empty() {
            self.data_dir.join("objects")
        } else {
            PathBuf::from(&self.storage.local.dir)
        }
    }

    /// The base URL clients use, without a trailing slash.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        if self.http.public_url.is_empty() {
            format!("http://{bound}")
        } else {
            self.http.public_url.trim_end_matches('/').to_string()
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

/// Every leaf setting: `http_listen` → (`http.listen`, default value).
fn flatten_settings(defaults: &Value) -> BTreeMap<String, (String, Value)> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeMap<String, (String, Value)>) {
        match v {
            Value::Table(t) => {
                for (k, child) in t {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            leaf => {
                out.insert(path.join("_"), (path.join("."), leaf.clone()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(defaults, &mut Vec::new(), &mut out);
    out
}

/// Parses an environment string as the type of the setting's default.
fn parse_env_value(raw: &str, default: &Value) -> Result<Value, String> {
    match default {
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("expected a number, got {raw:?}")),
        Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        _ => Ok(Value::String(raw.to_string())),
    }
}

fn set_path(root: &mut Value, dotted: &str, value: Value) {
    let mut node = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let table = node
            .as_table_mut()
            .expect("settings path runs through tables");
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return;
        }
        node = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Default::default()));
    }
}

/// Deep-merges `over` into `base`, remembering which file set each leaf.
fn merge(
    base: &mut Value,
    over: Value,
    prefix: &str,
    origins: &mut BTreeMap<String, String>,
    source: &str,
) {
    match (base, over) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => {
                        merge(existing, v, &path, origins, source)
                    }
                    _ => {
                        origins.insert(path.clone(), format!("{path} (in {source})"));
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_are_the_documented_ones() {
        let c = Config::defaults();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.rtmp.listen.to_string(), "127.0.0.1:1935");
        assert_eq!(c.storage.backend, StorageBackend::Local);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.database_url().starts_with("sqlite://./data/ferrocast.db"));
        assert_eq!(c.local_storage_dir(), PathBuf::from("./data/objects"));
    }

    #[test]
    fn every_setting_has_a_distinct_environment_name() {
        let defaults: Value = DEFAULTS_TOML.parse().unwrap();
        let flat = flatten_settings(&defaults);
        let mut leaves = 0;
        fn count(v: &Value, n: &mut usize) {
            match v {
                Value::Table(t) => t.values().for_each(|c| count(c, n)),
                _ => *n += 1,
            }
        }
        count(&defaults, &mut leaves);
        assert_eq!(
            flat.len(),
            leaves,
            "two settings map to one FERROCAST_ name"
        );
        for required in [
            "data_dir",
            "http_listen",
            "rtmp_listen",
            "database_url",
            "admin_key",
        ] {
            assert!(flat.contains_key(required), "{required}");
        }
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let file = "[http]\nlisten = \"127.0.0.1:9000\"\npublic_url = \"https://tv.example\"\n";
        let c = Config::from_sources(
            Some((Path::new("f.toml"), file)),
            env(&[
                ("FERROCAST_HTTP_LISTEN", "0.0.0.0:7000"),
                ("FERROCAST_DATA_DIR", "/srv/fc"),
                ("FERROCAST_DATABASE_URL", "postgres://u:pw@db/fc"),
                ("FERROCAST_ADMIN_KEY", "0123456789abcdef0123"),
                ("FERROCAST_STORAGE_S3_PATH_STYLE", "true"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(c.http.public_url, "https://tv.example");
        assert_eq!(c.data_dir, PathBuf::from("/srv/fc"));
        assert_eq!(c.database_url(), "postgres://u:pw@db/fc");
        assert_eq!(c.admin.key.expose(), "0123456789abcdef0123");
        assert!(c.storage.s3.path_style);
        assert_eq!(c.local_storage_dir(), PathBuf::from("/srv/fc/objects"));
    }

    #[test]
    fn invalid_values_name_the_setting_and_the_reason() {
        let e = Config::from_sources(None, env(&[("FERROCAST_HTTP_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("FERROCAST_HTTP_LISTEN (http.listen): "),
            "{e}"
        );
        assert!(e.contains("socket address"), "{e}");

        let e = Config::from_sources(
            Some((Path::new("f.toml"), "[http]\nlisten = 5\n")),
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("http.listen (in f.toml): "), "{e}");

        let e = Config::from_sources(None, env(&[("FERROCAST_DATABASE_MAX_CONNECTIONS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected an integer"), "{e}");

        let e = Config::from_sources(Some((Path::new("f.toml"), "[htp]\nlisten = 1\n")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `htp`"), "{e}");

        let e = Config::from_sources(None, env(&[("FERROCAST_LISTEN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("FERROCAST_LISTEN: no such setting"), "{e}");

        let e = Config::from_sources(None, env(&[("FERROCAST_STORAGE_BACKEND", "s3")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "storage.s3.bucket: required when storage.backend = \"s3\""
        );

        let e = Config::from_sources(None, env(&[("FERROCAST_ADMIN_KEY", "short")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("FERROCAST_ADMIN_KEY (admin.key): must be at least 16"),
            "{e}"
        );

        let e = Config::from_sources(None, env(&[("FERROCAST_DATABASE_URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("FERROCAST_DATABASE_URL (database.url): must start"),
            "{e}"
        );

        let e = Config::from_sources(Some((Path::new("f.toml"), "[http\n")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config file f.toml: "), "{e}");

        for (name, value, says) in [
            ("FERROCAST_LICENCES_WIDEVINE_URL", "ftp://wv", "http(s) URL"),
            ("FERROCAST_LICENCES_AUTH_HEADER", "no colon", "Name: value"),
        ] {
            let e = Config::from_sources(None, env(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(name) && e.contains(says), "{e}");
        }
    }

    /// The compose file configures Ferrocast only through environment variables; every one
    /// must be a real setting, and together they must form a valid configuration.
    #[test]
    fn docker_files_use_only_real_settings_with_valid_values() {
        let compose = include_str!("../../docker/compose.yaml");
        let mut pairs = Vec::new();
        for line in compose.lines() {
            let Some((name, value)) = line.trim().split_once(": ") else {
                continue;
            };
            if !name.starts_with(ENV_PREFIX) {
                continue;
            }
            let value = value.trim().trim_matches('"');
            // ${VAR:-default} → default; ${VAR:?message} → a value the user must supply.
            let value = match value.strip_prefix("${") {
                Some(rest) if rest.contains(":-") => rest
                    .split_once(":-")
                    .unwrap()
                    .1
                    .trim_end_matches('}')
                    .to_string(),
                Some(_) => "compose-admin-key-0123456789".to_string(),
                None => value.to_string(),
            };
            pairs.push((name.to_string(), value));
        }
        assert!(pairs.len() >= 10, "compose file lost its settings");
        let c = Config::from_sources(None, pairs).expect("compose settings form a valid config");
        assert_eq!(c.storage.backend, StorageBackend::S3);
        assert!(c.database_url().starts_with("postgres://"));

        let dockerfile = include_str!("../../docker/Dockerfile");
        let settings = flatten_settings(&DEFAULTS_TOML.parse().unwrap());
        for word in dockerfile.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(suffix) = word.strip_prefix(ENV_PREFIX).filter(|s| !s.is_empty()) {
                assert!(
                    settings.contains_key(&suffix.to_ascii_lowercase()),
                    "Dockerfile: {word} is not a setting"
                );
            }
        }
    }

    #[test]
    fn printed_config_redacts_secrets() {
        let c = Config::from_sources(
            None,
            env(&[
                (
                    "FERROCAST_DATABASE_URL",
                    "postgres://fc:hunter2secret@db:5432/fc",
                ),
                ("FERROCAST_ADMIN_KEY", "adminkey-0123456789abcdef"),
                ("FERROCAST_STORAGE_S3_SECRET_ACCESS_KEY", "s3secretvalue"),
                ("FERROCAST_STORAGE_S3_ACCESS_KEY_ID", "AKIA123"),
            ]),
        )
        .unwrap();
        let text = c.to_redacted_toml();
        for secret in [
            "hunter2secret",
            "adminkey-0123456789abcdef",
            "s3secretvalue",
        ] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
            assert!(
                !format!("{c:?}").contains(secret),
                "{secret} leaked in Debug"
            );
        }
        assert!(
            text.contains("postgres://fc:%5Bredacted%5D@db:5432/fc") || text.contains("[redacted]")
        );
        assert!(text.contains("AKIA123"));
        // The printed form is itself a valid config file.
        let back: Value = text.parse().unwrap();
        assert!(back.get("http").is_some());
    }
}
