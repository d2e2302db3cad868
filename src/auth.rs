//! API keys on the public listener (`[auth]`): who is calling (a bearer key, matched by its
//! SHA-256 digest in constant time), whether it may call this model, and whether it is within
//! its rate (a token bucket per key). Keys are known by their id in logs and metrics, never by
//! the key. A keys file of their own is re-read when it changes, the last good set kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::{AuthConfig, ConfigError, KeyConfig, KeysFile};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("this API needs an API key: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("the API key is not valid (unknown or revoked)")]
    Invalid,
    #[error("API key `{key}` may not call model `{model}`")]
    Forbidden { key: String, model: String },
    /// gRPC names its model inside the message, after this check: only a key for every
    /// model may call it.
    #[error(
        "API key `{key}` is limited to some models, and gRPC calls are only checked per key: \
         call over REST, or use a key with models = [\"*\"]"
    )]
    GrpcNeedsAllModels { key: String },
    #[error("API key `{key}` is over its rate of {rate} requests/s; retry in {retry_after_s} s")]
    RateLimited {
        key: String,
        rate: f64,
        retry_after_s: u64,
    },
}

/// What [`Auth::check_grpc`] asks for: not a model name (names never contain `/`).
const ANY_MODEL: &str = "/any";

/// The gRPC status for a refusal: UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED.
pub fn grpc_status(e: &AuthError) -> tonic::Status {
    let message = e.to_string();
    match e {
        AuthError::Missing | AuthError::Invalid => tonic::Status::unauthenticated(message),
        AuthError::Forbidden { .. } | AuthError::GrpcNeedsAllModels { .. } => {
            tonic::Status::permission_denied(message)
        }
        AuthError::RateLimited { .. } => tonic::Status::resource_exhausted(message),
    }
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER` and `Bearer` all name it.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches(' '))
}

/// Compares without stopping at the first difference, so response time says nothing about
/// how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// A key's request budget: `burst` tokens, refilled at `rate` per second.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    /// (tokens left, when they were counted). A std mutex: held for a few arithmetic
    /// operations, never across an await.
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Bucket {
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&self) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

#[derive(Debug)]
struct Key {
    id: String,
    digest: [u8; 32],
    /// `None`: every model (`"*"`).
    models: Option<BTreeSet<String>>,
    bucket: Option<Arc<Bucket>>,
    /// What the bucket was made from, to keep its state across a reload that keeps it.
    limits: (Option<f64>, Option<u32>),
}

#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Builds the set, reusing `old`'s bucket for a key whose id and limits are unchanged so
    /// a reload doesn't hand every key a fresh burst.
    fn build(configs: &[KeyConfig], old: &KeySet) -> KeySet {
        let keys = configs
            .iter()
            .map(|c| {
                let limits = (c.rate, c.burst);
                let bucket = old
                    .keys
                    .iter()
                    .find(|k| k.id == c.id && k.limits == limits)
                    .and_then(|k| k.bucket.clone())
                    .or_else(|| {
                        c.rate.map(|rate| {
                            let burst = c.burst.map_or(rate.ceil().max(1.0), f64::from);
                            Arc::new(Bucket::new(rate, burst))
                        })
                    });
                let mut digest = [0u8; 32];
                // Validated as 64 hex digits before it gets here.
                let _ = hex::decode_to_slice(&c.sha256, &mut digest);
                Key {
                    id: c.id.clone(),
                    digest,
                    models: (!c.models.iter().any(|m| m == "*"))
                        .then(|| c.models.iter().cloned().collect()),
                    bucket,
                    limits,
                }
            })
            .collect();
        KeySet { keys }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    /// The key's id; `none` without a key, `invalid` for a key that matches none.
    key: String,
    /// `allowed`, `unauthenticated`, `forbidden` or `rate_limited`.
    outcome: &'static str,
}

/// The keys in force and the counters of what they were used for.
pub struct Auth {
    config: AuthConfig,
    keys: ArcSwap<KeySet>,
    /// The keys file's digest when last read (good or not), so a bad edit is logged once.
    file_digest: Mutex<Option<[u8; 32]>>,
    decisions: Family<AuthLabels, Counter>,
    reloads: Family<ReloadLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    /// `reloaded`, or `failed` (the previous keys kept).
    outcome: &'static str,
}

impl Auth {
    /// Loads `[auth]` and its keys file; an error here stops the gateway from starting.
    pub fn load(config: &AuthConfig, registry: &mut Registry) -> Result<Auth, ConfigError> {
        let decisions = Family::<AuthLabels, Counter>::default();
        registry.register(
            "infergate_auth_requests",
            "Public requests by API key id and outcome (allowed, unauthenticated, forbidden, rate_limited)",
            decisions.clone(),
        );
        let reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "infergate_auth_reloads",
            "Changes of auth.keys_file noticed: reloaded, or failed (the previous keys kept)",
            reloads.clone(),
        );
        let auth = Auth {
            config: config.clone(),
            keys: ArcSwap::from_pointee(KeySet::default()),
            file_digest: Mutex::new(None),
            decisions,
            reloads,
        };
        auth.load_keys(true)?;
        Ok(auth)
    }

    /// Who sent `headers`, and may they call `model` (`None`: an endpoint of no one model,
    /// such as the model list) now? Returns the key's id.
    pub fn check(&self, headers: &HeaderMap, model: Option<&str>) -> Result<String, AuthError> {
        let result = self.decide(headers, model);
        let (key, outcome) = match &result {
            Ok(id) => (id.clone(), "allowed"),
            Err(AuthError::Missing) => ("none".to_string(), "unauthenticated"),
            Err(AuthError::Invalid) => ("invalid".to_string(), "unauthenticated"),
            Err(AuthError::Forbidden { key, .. } | AuthError::GrpcNeedsAllModels { key }) => {
                (key.clone(), "forbidden")
            }
            Err(AuthError::RateLimited { key, .. }) => (key.clone(), "rate_limited"),
        };
        self.decisions
            .get_or_create(&AuthLabels { key, outcome })
            .inc();
        result
    }

    /// [`Auth::check`] for a gRPC call, whose model is not known before the message is
    /// decoded: the key must allow every model.
    pub fn check_grpc(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        self.check(headers, Some(ANY_MODEL))
    }

    fn decide(&self, headers: &HeaderMap, model: Option<&str>) -> Result<String, AuthError> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let keys = self.keys.load();
        // Every stored digest is compared, in constant time, whatever matched before.
        let mut found = None;
        for key in &keys.keys {
            if constant_time_eq(&key.digest, &digest) {
                found = Some(key);
            }
        }
        let key = found.ok_or(AuthError::Invalid)?;
        if model == Some(ANY_MODEL) && key.models.is_some() {
            return Err(AuthError::GrpcNeedsAllModels {
                key: key.id.clone(),
            });
        }
        if let (Some(model), Some(allowed)) = (model, &key.models)
            && !allowed.contains(model)
        {
            return Err(AuthError::Forbidden {
                key: key.id.clone(),
                model: model.to_string(),
            });
        }
        if let Some(bucket) = &key.bucket {
            bucket.take().map_err(|wait| AuthError::RateLimited {
                key: key.id.clone(),
                rate: bucket.rate,
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            })?;
        }
        Ok(key.id.clone())
    }

    /// Re-reads the keys file (if any); swaps in the new key set when it changed and is
    /// valid. Returns whether it swapped. Blocking: call it off the async workers.
    pub fn reload_if_changed(&self) -> Result<bool, ConfigError> {
        let outcome = self.load_keys(false);
        let label = match &outcome {
            Ok(false) => None,
            Ok(true) => Some("reloaded"),
            Err(_) => Some("failed"),
        };
        if let Some(outcome) = label {
            self.reloads.get_or_create(&ReloadLabel { outcome }).inc();
        }
        outcome
    }

    /// Reads the keys file once and builds the key set from exactly the bytes it hashed.
    /// An empty file is refused at start; on a reload it is taken for a write in progress
    /// (an in-place `>` truncates before it writes) and skipped, so it never revokes every
    /// key for an instant. `keys = []` says "no keys in this file" on purpose.
    fn load_keys(&self, starting: bool) -> Result<bool, ConfigError> {
        let mut keys = self.config.keys.clone();
        let mut digest = None;
        if let Some(path) = &self.config.keys_file {
            let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
                path: path.clone(),
                cause,
            })?;
            if text.trim().is_empty() {
                if starting {
                    return Err(ConfigError::invalid(
                        path,
                        "the keys file is empty: add [[keys]] entries (or `keys = []` \
                         for none on purpose)",
                    ));
                }
                return Ok(false);
            }
            let d: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            let mut last = self
                .file_digest
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *last == Some(d) {
                return Ok(false);
            }
            *last = Some(d);
            digest = Some(d);
            keys.extend(KeysFile::parse(path, &text)?.keys);
            check_unique(path, &keys)?;
        }
        let old = self.keys.load();
        self.keys.store(Arc::new(KeySet::build(&keys, &old)));
        Ok(digest.is_some())
    }

    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.config.reload_interval_ms)
    }

    pub fn keys_file(&self) -> Option<&Path> {
        self.config.keys_file.as_deref()
    }
}

/// An id in both gateway.toml and the keys file is ambiguous: refuse the file.
fn check_unique(path: &Path, keys: &[KeyConfig]) -> Result<(), ConfigError> {
    let mut seen = BTreeMap::new();
    for key in keys {
        if seen.insert(key.id.as_str(), ()).is_some() {
            return Err(ConfigError::invalid(
                path,
                format!(
                    "key id `{}` is also in [[auth.keys]] of gateway.toml",
                    key.id
                ),
            ));
        }
    }
    Ok(())
}

/// Polls the keys file until `shutdown` resolves (see [`crate::tls::watch`] for why polling).
pub async fn watch(auth: Arc<Auth>, shutdown: impl std::future::Future<Output = ()>) {
    if auth.keys_file().is_none() {
        return;
    }
    tokio::pin!(shutdown);
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(auth.reload_interval()) => {}
            () = &mut shutdown => return,
        }
        let polled = auth.clone();
        match tokio::task::spawn_blocking(move || polled.reload_if_changed()).await {
            Ok(Ok(changed)) => {
                if changed {
                    tracing::info!("API keys reloaded");
                }
                failing = false;
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!("API keys reload failed, the previous keys stay in force: {e}");
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!("API keys reload task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(
        id: &str,
        secret: &str,
        models: &[&str],
        rate: Option<f64>,
        burst: Option<u32>,
    ) -> KeyConfig {
        KeyConfig {
            id: id.into(),
            sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            models: models.iter().map(ToString::to_string).collect(),
            rate,
            burst,
        }
    }

    fn auth(keys: Vec<KeyConfig>) -> Auth {
        let config = AuthConfig {
            keys,
            keys_file: None,
            reload_interval_ms: 5000,
        };
        Auth::load(&config, &mut Registry::default()).unwrap()
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    /// The scheme is matched case-insensitively; other schemes and a bare token are not bearer.
    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k", "bearer k", "BEARER k", "bEaReR  k"] {
            assert_eq!(bearer_token(value), Some("k"), "{value}");
        }
        assert_eq!(bearer_token("Basic k"), None);
        assert_eq!(bearer_token("k"), None);
    }

    /// Equal slices compare equal; a difference anywhere, or in length, does not.
    #[test]
    fn constant_time_eq_compares_all() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    /// Missing and unknown keys are 401s, a model outside the key's list 403, and "*" allows all.
    #[tokio::test]
    async fn keys_models_and_wildcards() {
        let auth = auth(vec![
            key("a", "secret-a", &["digits"], None, None),
            key("all", "secret-all", &["*"], None, None),
        ]);
        assert_eq!(
            auth.check(&HeaderMap::new(), Some("digits")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.check(&bearer("Bearer nope"), Some("digits")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.check(&bearer("bearer secret-a"), Some("digits")),
            Ok("a".into())
        );
        assert!(matches!(
            auth.check(&bearer("Bearer secret-a"), Some("other")),
            Err(AuthError::Forbidden { .. })
        ));
        assert_eq!(auth.check(&bearer("Bearer secret-a"), None), Ok("a".into()));
        assert_eq!(
            auth.check(&bearer("Bearer secret-all"), Some("other")),
            Ok("all".into())
        );
    }

    /// A burst of 2 at 1 request/s: two pass, the third is told to retry in 1 s, and after a
    /// second (paused clock) one more passes. Another key's bucket is its own.
    #[tokio::test(start_paused = true)]
    async fn token_bucket_both_ways() {
        let auth = auth(vec![
            key("slow", "s", &["*"], Some(1.0), Some(2)),
            key("other", "o", &["*"], Some(1.0), Some(1)),
        ]);
        let slow = bearer("Bearer s");
        assert!(auth.check(&slow, Some("m")).is_ok());
        assert!(auth.check(&slow, Some("m")).is_ok());
        assert_eq!(
            auth.check(&slow, Some("m")),
            Err(AuthError::RateLimited {
                key: "slow".into(),
                rate: 1.0,
                retry_after_s: 1
            })
        );
        assert!(auth.check(&bearer("Bearer o"), Some("m")).is_ok());
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(auth.check(&slow, Some("m")).is_ok());
        assert!(auth.check(&slow, Some("m")).is_err());
    }

    /// An empty keys file stops the start naming it; on a reload it is a write in progress
    /// and changes nothing, while `keys = []` on purpose revokes the file's keys.
    #[test]
    fn empty_keys_file_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.toml");
        let config = AuthConfig {
            keys: Vec::new(),
            keys_file: Some(file.clone()),
            reload_interval_ms: 5000,
        };
        std::fs::write(&file, "\n").unwrap();
        let Err(e) = Auth::load(&config, &mut Registry::default()) else {
            panic!("an empty keys file was accepted at start");
        };
        let message = e.to_string();
        assert!(
            message.contains("keys.toml") && message.contains("empty"),
            "{message}"
        );

        let entry = key("k", "secret", &["m"], None, None);
        std::fs::write(
            &file,
            format!(
                "[[keys]]\nid = \"k\"\nsha256 = \"{}\"\nmodels = [\"m\"]\n",
                entry.sha256
            ),
        )
        .unwrap();
        let auth = Auth::load(&config, &mut Registry::default()).unwrap();
        assert_eq!(
            auth.check(&bearer("Bearer secret"), Some("m")),
            Ok("k".into())
        );

        std::fs::write(&file, "").unwrap();
        assert!(matches!(auth.reload_if_changed(), Ok(false)));
        assert_eq!(
            auth.check(&bearer("Bearer secret"), Some("m")),
            Ok("k".into())
        );

        std::fs::write(&file, "keys = []\n").unwrap();
        assert!(matches!(auth.reload_if_changed(), Ok(true)));
        assert_eq!(
            auth.check(&bearer("Bearer secret"), Some("m")),
            Err(AuthError::Invalid)
        );
    }
}
