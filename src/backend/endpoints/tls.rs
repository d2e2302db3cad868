//! TLS to the model servers: `[backends.<name>.tls]`'s PEM files read into tonic's client TLS
//! settings (rustls): the CA the servers' certificates must chain to, optionally a client
//! certificate and key (mutual TLS). Files are read once, when the backend starts; errors name
//! the key and the file.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::BackendTlsConfig;

/// The channels' TLS settings for `[backends.<backend>.tls]`.
pub fn client_config(backend: &str, tls: &BackendTlsConfig) -> Result<ClientTlsConfig, String> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            format!(
                "backends.{backend}.tls.{key}: cannot read {}: {e}",
                path.display()
            )
        })
    };
    let ca = read("ca", &tls.ca)?;
    if !looks_like_pem(&ca, "CERTIFICATE") {
        return Err(format!(
            "backends.{backend}.tls.ca: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            tls.ca.display()
        ));
    }
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let cert_pem = read("cert", cert)?;
            let key_pem = read("key", key)?;
            if !looks_like_pem(&cert_pem, "CERTIFICATE") {
                return Err(format!(
                    "backends.{backend}.tls.cert: {} holds no PEM certificate",
                    cert.display()
                ));
            }
            if !looks_like_pem(&key_pem, "PRIVATE KEY") {
                return Err(format!(
                    "backends.{backend}.tls.key: {} holds no PEM private key",
                    key.display()
                ));
            }
            config = config.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (None, None) => {}
        _ => {
            return Err(format!(
                "backends.{backend}.tls: `cert` and `key` go together (a client certificate needs its key)"
            ));
        }
    }
    Ok(config)
}

/// Whether `pem` has a `-----BEGIN …<kind>-----` block (`PRIVATE KEY` matches RSA and EC
/// keys too): a cheap check that names the wrong file before rustls says something vaguer.
fn looks_like_pem(pem: &[u8], kind: &str) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")))
}

/// A tonic transport error with its causes, in one line.
pub(super) fn describe(error: &tonic::transport::Error) -> String {
    use std::error::Error;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
