//! TLS material from PEM files (certificate chains, private keys, CA bundles) for rustls, with
//! its one crypto provider (`ring`), and the public listener's acceptor that reloads its files
//! when they change. The PEM helpers are shared: ingress and backend TLS load files the same
//! way and report the same errors.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why TLS material could not be loaded; each names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM `CERTIFICATE` block in the file", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: no PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`) in the file", .0.display())]
    NoKey(PathBuf),
    #[error("{}: not valid PEM: {message}", .path.display())]
    Pem { path: PathBuf, message: String },
    #[error("{}: a CA certificate was refused: {message}", .path.display())]
    BadCa { path: PathBuf, message: String },
    /// The files parsed but do not make a usable configuration, e.g. a key that is not the
    /// certificate's.
    #[error("{what}: {message}")]
    Config { what: String, message: String },
}

/// The crypto provider every TLS configuration of the gateway uses. `ring` builds with a C
/// compiler alone; tonic's `tls-ring` feature picks the same one for backend channels.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in file order (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(path, &read(path)?)
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_key(path, &read(path)?)
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_path_buf()),
        e => TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// A CA bundle: every certificate in the file becomes a trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    parse_roots(path, &read(path)?)
}

fn parse_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(path, pem)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The files of `[server.tls]` read once, with the digest that tells a rotation apart.
struct Snapshot {
    digest: [u8; 32],
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Snapshot {
    fn read(tls: &TlsConfig) -> Result<Snapshot, TlsError> {
        let cert = read(&tls.cert)?;
        let key = read(&tls.key)?;
        let client_ca = tls.client_ca.as_deref().map(read).transpose()?;
        let mut hash = Sha256::new();
        for part in [Some(&cert), Some(&key), client_ca.as_ref()] {
            let part = part.map_or(&[][..], Vec::as_slice);
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        Ok(Snapshot {
            digest: hash.finalize().into(),
            cert,
            key,
            client_ca,
        })
    }

    /// A server configuration offering h2 and HTTP/1.1 by ALPN, verifying client
    /// certificates against `client_ca` when it is set (mTLS: a client without a valid
    /// certificate fails the handshake).
    fn server_config(&self, tls: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
        let certs = parse_certs(&tls.cert, &self.cert)?;
        let key = parse_key(&tls.key, &self.key)?;
        let config_error = |what: &Path, e: &dyn std::fmt::Display| TlsError::Config {
            what: what.display().to_string(),
            message: e.to_string(),
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(&tls.cert, &e))?;
        let builder = match (&tls.client_ca, &self.client_ca) {
            (Some(path), Some(pem)) => {
                let roots = Arc::new(parse_roots(path, pem)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| config_error(path, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        // rustls checks that the key is the certificate's: a half-finished rotation (new
        // certificate, old key) is refused here and the previous configuration keeps serving.
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            config_error(
                &tls.key,
                &format!(
                    "the key and the certificate in {} do not fit: {e}",
                    tls.cert.display()
                ),
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The public listener's TLS acceptor. The files are re-read every `reload_interval_ms`;
/// when their content changed and still makes a valid configuration, new connections get
/// the new one, while open connections keep the session they negotiated. A rotation that
/// doesn't load (a missing file, a key that doesn't fit) is logged and the last good
/// configuration keeps serving.
pub struct Acceptor {
    tls: TlsConfig,
    current: ArcSwap<TlsAcceptor>,
    /// The digest of the files last tried, good or not, so a bad rotation is logged once.
    tried: Mutex<[u8; 32]>,
    reloads: Family<ReloadLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    /// `reloaded` or `failed` (the previous certificate kept serving).
    outcome: &'static str,
}

impl Acceptor {
    /// Loads the files; an error here stops the gateway from starting. Its reload counter
    /// (`infergate_tls_reloads_total{outcome}`) goes on `registry`.
    pub fn load(tls: &TlsConfig, registry: &mut Registry) -> Result<Acceptor, TlsError> {
        let snapshot = Snapshot::read(tls)?;
        let config = snapshot.server_config(tls)?;
        let reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "infergate_tls_reloads",
            "Certificate rotations noticed on the public listener: reloaded, or failed (the previous one kept)",
            reloads.clone(),
        );
        Ok(Acceptor {
            tls: tls.clone(),
            current: ArcSwap::from_pointee(TlsAcceptor::from(Arc::new(config))),
            tried: Mutex::new(snapshot.digest),
            reloads,
        })
    }

    /// The acceptor for a connection accepted now.
    pub fn current(&self) -> Arc<TlsAcceptor> {
        self.current.load_full()
    }

    /// Re-reads the files; swaps in a new configuration if they changed and load. Returns
    /// whether it swapped. Blocking file reads: call it off the async workers.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let snapshot = Snapshot::read(&self.tls)?;
        // Never held across an await: a std mutex.
        let mut tried = self
            .tried
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *tried == snapshot.digest {
            return Ok(false);
        }
        *tried = snapshot.digest;
        drop(tried);
        let outcome = snapshot.server_config(&self.tls);
        let label = if outcome.is_ok() {
            "reloaded"
        } else {
            "failed"
        };
        self.reloads
            .get_or_create(&ReloadLabel { outcome: label })
            .inc();
        self.current
            .store(Arc::new(TlsAcceptor::from(Arc::new(outcome?))));
        Ok(true)
    }

    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.tls.reload_interval_ms)
    }
}

/// Polls the acceptor's files until `shutdown` resolves. Polling, not filesystem events:
/// Kubernetes rotates Secret volumes by swapping a `..data` symlink, which inotify reports
/// on the directory rather than on the file a path names, and reading two small files every
/// few seconds costs nothing.
pub async fn watch(acceptor: Arc<Acceptor>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(acceptor.reload_interval()) => {}
            () = &mut shutdown => return,
        }
        let polled = acceptor.clone();
        let outcome = tokio::task::spawn_blocking(move || polled.reload_if_changed()).await;
        match outcome {
            Ok(Ok(true)) => {
                failing = false;
                tracing::info!(cert = %acceptor.tls.cert.display(), "TLS certificate reloaded");
            }
            Ok(Ok(false)) => failing = false,
            // A file missing mid-rotation is normal for a moment: say it once per episode.
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!("TLS reload failed, the previous certificate keeps serving: {e}");
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!("TLS reload task failed: {e}"),
        }
    }
}
