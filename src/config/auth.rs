//! `[auth]` in gateway.toml and the keys file it may name: API keys for the public listener,
//! each stored as the SHA-256 digest of the key (never the key), with the models it may call
//! and its request rate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `[auth]`
/// ```toml
/// [auth]
/// keys_file = "keys.toml"       # optional: more [[keys]] in a file of their own, re-read when it changes
/// reload_interval_ms = 5000     # how often keys_file is checked for a change
///
/// [[auth.keys]]
/// id = "team-a"                 # what logs and metrics show; never the key itself
/// sha256 = "9f86d081…"          # hex SHA-256 of the key: `printf %s "$KEY" | sha256sum`
/// models = ["digits"]           # models the key may call; "*" for all
/// rate = 50.0                   # requests per second (token bucket refill); omitted: unlimited
/// burst = 100                   # the bucket's size; default: the rate rounded up, at least 1
/// ```
/// With `[auth]` present, every public endpoint but `/healthz`, `/readyz` and `/openapi.json`
/// needs `Authorization: Bearer <key>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Relative to gateway.toml.
    pub keys_file: Option<PathBuf>,
    #[serde(default = "super::gateway::default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

/// One API key: `[[auth.keys]]` in gateway.toml, or `[[keys]]` in the keys file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: String,
    pub sha256: String,
    pub models: Vec<String>,
    pub rate: Option<f64>,
    pub burst: Option<u32>,
}

/// The keys file: `[[keys]]` entries, as in `[[auth.keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

impl KeysFile {
    /// Checks the text of a keys file read from `path` (read once by the caller, so what is
    /// checked is what was hashed to notice the change).
    pub fn parse(path: &Path, text: &str) -> Result<KeysFile, ConfigError> {
        let file: KeysFile = super::parse_toml(path, text)?;
        validate_keys(path, "keys", &file.keys)?;
        Ok(file)
    }
}

impl AuthConfig {
    pub(super) fn resolve(&mut self, base: &Path) {
        if let Some(file) = self.keys_file.as_mut().filter(|f| f.is_relative()) {
            *file = base.join(&*file);
        }
    }

    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.reload_interval_ms == 0 {
            return Err(ConfigError::invalid(
                path,
                "auth.reload_interval_ms must be greater than 0",
            ));
        }
        if self.keys.is_empty() && self.keys_file.is_none() {
            return Err(ConfigError::invalid(
                path,
                "[auth] has no keys: add [[auth.keys]] entries or auth.keys_file \
                 (or remove [auth] to leave the public API open)",
            ));
        }
        validate_keys(path, "auth.keys", &self.keys)
    }
}

/// Ids unique and printable, digests 64 hex digits, rates and bursts positive, a model
/// list that names something.
pub(super) fn validate_keys(
    path: &Path,
    table: &str,
    keys: &[KeyConfig],
) -> Result<(), ConfigError> {
    let mut ids = BTreeSet::new();
    for key in keys {
        let at = format!("{table} `{}`", key.id);
        let ok_id = !key.id.is_empty()
            && key.id.len() <= 64
            && key
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok_id {
            return Err(ConfigError::invalid(
                path,
                format!(
                    "{table}: id `{}` must be 1-64 characters of letters, digits, `-`, `_`, `.` \
                     (it is a metric label)",
                    key.id
                ),
            ));
        }
        if !ids.insert(key.id.as_str()) {
            return Err(ConfigError::invalid(
                path,
                format!("{at}: the id is used twice"),
            ));
        }
        if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::invalid(
                path,
                format!(
                    "{at}: sha256 must be the key's SHA-256 digest as 64 hex digits \
                     (`printf %s \"$KEY\" | sha256sum`), not the key"
                ),
            ));
        }
        if key.models.is_empty() {
            return Err(ConfigError::invalid(
                path,
                format!("{at}: models is empty; list the models it may call, or [\"*\"]"),
            ));
        }
        if key.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err(ConfigError::invalid(
                path,
                format!("{at}: rate must be a number of requests per second above 0"),
            ));
        }
        if key.burst == Some(0) {
            return Err(ConfigError::invalid(
                path,
                format!("{at}: burst must be at least 1"),
            ));
        }
    }
    Ok(())
}
