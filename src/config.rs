//! Configuration as plain data: `gateway.toml` (listeners, limits, backends) and one
//! `model.toml` per folder under the plugin directory. Everything is read and validated before
//! a port is bound; an unknown key is an error that names the file, the key and the line.

mod auth;
mod gateway;
mod model;

use std::path::{Path, PathBuf};

pub use auth::{AuthConfig, KeyConfig, KeysFile};
pub use gateway::{
    BackendConfig, BackendTlsConfig, EndpointSpec, GatewayConfig, GrpcBackendConfig, HealthConfig,
    KserveV2Config, OnnxConfig, PluginsConfig, RetryConfig, ServerConfig, TfServingConfig,
    TlsConfig, WatchMode,
};
pub use model::{BatchingConfig, LimitsConfig, ModelConfig};

/// Why a configuration file can't be used. Messages start with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {cause}")]
    Read {
        path: PathBuf,
        /// Not `source`: the message already shows it, and a source would print it twice.
        cause: std::io::Error,
    },
    /// A TOML syntax error or a key the schema does not know; the message carries line and column.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Well-formed but wrong: a missing file, a bad value, a backend that does not exist.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Reads a TOML file into `T`, turning serde's errors (which carry the line, column and
/// offending key) into a [`ConfigError`] that names the file.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    parse_toml(path, &text)
}

pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}
