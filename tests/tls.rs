//! The public listener over TLS (`[server.tls]`), with certificates made in the test by
//! rcgen: HTTP/1.1 and h2 by ALPN, a real client (curl), client-certificate verification
//! (a valid certificate served; none, an expired one and one from another CA refused), and
//! a Kubernetes-style rotation (the `..data` symlink swapped) under load with no failed
//! request and no connection dropped, a broken rotation keeping the old certificate.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A CA that signs server and client certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1, valid now unless `expired`.
    fn leaf(&self, name: &str, expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A gateway over TLS with `server` lines; the files live in `dir`.
async fn tls_gateway(tls: &str) -> TestGateway {
    gateway()
        .server_config(&format!("[server.tls]\n{tls}"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
}

fn client_config(ca: &str, alpn: &[&[u8]], client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(infergate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let certs: Vec<CertificateDer<'static>> =
                rustls::pki_types::pem::PemObject::pem_slice_iter(leaf.cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key: PrivateKeyDer<'static> =
                rustls::pki_types::pem::PemObject::from_pem_slice(leaf.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn addr(gw: &TestGateway) -> String {
    gw.url.trim_start_matches("http://").to_string()
}

async fn connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One HTTP/1.1 request on an open connection; the status line's code, or an error.
async fn get(stream: &mut TlsStream<TcpStream>, path: &str, close: bool) -> std::io::Result<u16> {
    let connection = if close { "close" } else { "keep-alive" };
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: {connection}\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    // The answers here are small JSON bodies with a Content-Length: read the head and body.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let code = text[9..12].parse().unwrap_or(0);
                return Ok(code);
            }
        }
    }
}

/// The certificate the server presented on this connection.
fn peer_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    let cert: CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    cert.to_vec()
}

/// HTTP/1.1 and h2 are both offered by ALPN and both answer; plain HTTP on the TLS port
/// gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http1_and_h2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let server = ca.leaf("server", false);
    write(&dir.path().join("tls.crt"), &server.cert);
    write(&dir.path().join("tls.key"), &server.key);
    let gw = tls_gateway(&format!(
        "cert = \"{0}/tls.crt\"\nkey = \"{0}/tls.key\"\n",
        dir.path().display()
    ))
    .await;

    let mut h1 = connect(&addr(&gw), client_config(&ca.pem, &[b"http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get(&mut h1, "/healthz", false).await.unwrap(), 200);
    assert_eq!(
        get(&mut h1, "/readyz", true).await.unwrap(),
        200,
        "keep-alive over TLS"
    );

    let h2 = connect(
        &addr(&gw),
        client_config(&ca.pem, &[b"h2", b"http/1.1"], None),
    )
    .await
    .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, connection) = h2::client::handshake(h2).await.unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get("https://localhost/healthz")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    driver.abort();

    let mut plain = TcpStream::connect(addr(&gw)).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP answered on TLS"
    );
}

/// Runs curl with `args` off the async workers (the gateway runs on them).
async fn curl(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(&args)
            .output()
            .expect("curl is needed for this test (apt-get install curl)")
    })
    .await
    .unwrap()
}

/// curl, a real client, over HTTP/1.1 and HTTP/2, trusting only the test CA; without the
/// CA it refuses the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_answers_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let server = ca.leaf("server", false);
    write(&dir.path().join("tls.crt"), &server.cert);
    write(&dir.path().join("tls.key"), &server.key);
    write(&dir.path().join("ca.crt"), &ca.pem);
    let gw = tls_gateway(&format!(
        "cert = \"{0}/tls.crt\"\nkey = \"{0}/tls.key\"\n",
        dir.path().display()
    ))
    .await;
    let port = gw.url.rsplit(':').next().unwrap().to_string();
    let url = format!("https://localhost:{port}/v1/models");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca_file = dir.path().join("ca.crt").display().to_string();
    for version in ["--http1.1", "--http2"] {
        let out = curl(
            [
                "-sS",
                "--fail",
                version,
                "--cacert",
                &ca_file,
                "--resolve",
                &resolve,
            ]
            .into_iter()
            .chain(["-w", "\n%{http_version} %{http_code}", &url])
            .map(String::from)
            .collect(),
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{version}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = if version == "--http2" {
            "2 200"
        } else {
            "1.1 200"
        };
        assert!(text.ends_with(expected), "{version}: {text}");
        assert!(text.contains("\"models\""), "{text}");
    }
    let out = curl(
        ["-sS", "--resolve", &resolve, &url]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(
        !out.status.success(),
        "curl trusted a certificate from an unknown CA"
    );
}

/// With `client_ca`, a client certificate from that CA is served; no certificate, an
/// expired one, or one from another CA gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let server = ca.leaf("server", false);
    write(&dir.path().join("tls.crt"), &server.cert);
    write(&dir.path().join("tls.key"), &server.key);
    write(&dir.path().join("clients.crt"), &ca.pem);
    let gw = tls_gateway(&format!(
        "cert = \"{0}/tls.crt\"\nkey = \"{0}/tls.key\"\nclient_ca = \"{0}/clients.crt\"\n",
        dir.path().display()
    ))
    .await;

    let good = ca.leaf("client", false);
    let mut stream = connect(
        &addr(&gw),
        client_config(&ca.pem, &[b"http/1.1"], Some(&good)),
    )
    .await
    .unwrap();
    assert_eq!(get(&mut stream, "/healthz", true).await.unwrap(), 200);

    let expired = ca.leaf("expired client", true);
    let wrong_ca = other.leaf("stranger", false);
    for (what, leaf) in [
        ("no certificate", None),
        ("expired", Some(&expired)),
        ("wrong CA", Some(&wrong_ca)),
    ] {
        // TLS 1.3 finishes the client's side of the handshake before the server has looked
        // at the certificate: the refusal arrives as an alert on the first read.
        let outcome = match connect(&addr(&gw), client_config(&ca.pem, &[b"http/1.1"], leaf)).await
        {
            Err(e) => Err(e),
            Ok(mut stream) => get(&mut stream, "/healthz", true).await,
        };
        assert!(outcome.is_err(), "{what}: answered {outcome:?}");
    }
    let metrics = gw.admin_get("/metrics", &[]).await.text();
    assert!(
        metrics.contains(
            "infergate_connections_closed_total{listener=\"public\",reason=\"tls_handshake\"} 3"
        ),
        "{metrics}"
    );
}

/// The Kubernetes Secret volume layout: `tls.crt -> ..data/tls.crt`, `..data -> ..<ts>/`.
struct SecretVolume {
    dir: PathBuf,
    generation: usize,
}

impl SecretVolume {
    fn new(dir: &Path, leaf: &Leaf) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        volume.swap_in(&leaf.cert, &leaf.key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        volume
    }

    /// Writes a new timestamped folder and swaps `..data` to it atomically (a rename).
    fn swap_in(&mut self, cert: &str, key: &str) {
        self.generation += 1;
        let folder = format!(
            "..2026_01_01_00_00_0{}.{}",
            self.generation,
            1000 + self.generation
        );
        std::fs::create_dir(self.dir.join(&folder)).unwrap();
        write(&self.dir.join(&folder).join("tls.crt"), cert);
        write(&self.dir.join(&folder).join("tls.key"), key);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&folder, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

/// Under load from fresh and kept-alive connections, the certificate is rotated the way
/// Kubernetes does it. A broken rotation (a key that isn't the certificate's) keeps the old
/// certificate; the good one is served to new connections soon after; no request fails and
/// the kept-alive connection opened before is still served after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_fails_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let first = ca.leaf("server 1", false);
    let second = ca.leaf("server 2", false);
    let mut volume = SecretVolume::new(dir.path(), &first);
    let gw = tls_gateway(&format!(
        "cert = \"{0}/tls.crt\"\nkey = \"{0}/tls.key\"\nreload_interval_ms = 50\n",
        dir.path().display()
    ))
    .await;
    let config = client_config(&ca.pem, &[b"http/1.1"], None);
    let mut kept = connect(&addr(&gw), config.clone()).await.unwrap();
    assert_eq!(get(&mut kept, "/healthz", false).await.unwrap(), 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, config, addr) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                config.clone(),
                addr(&gw),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match connect(&addr, config.clone()).await {
                        Ok(mut s) => get(&mut s, "/healthz", true).await.ok(),
                        Err(_) => None,
                    };
                    let counter = if outcome == Some(200) { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // A half-done rotation: the new certificate with the old key. It must not be served.
    volume.swap_in(&second.cert, &first.key);
    eventually(10, "the broken rotation tried", || {
        let url = format!("{}/metrics", gw.admin_url);
        async move {
            let text = send(http::Method::GET, &url, bytes::Bytes::new(), &[])
                .await
                .text();
            text.contains("infergate_tls_reloads_total{outcome=\"failed\"} 1")
        }
    })
    .await;
    let probe = connect(&addr(&gw), config.clone()).await.unwrap();
    assert_eq!(
        peer_cert(&probe),
        pem_der(&first.cert),
        "a mismatched key was swapped in"
    );

    volume.swap_in(&second.cert, &second.key);
    eventually(10, "new connections get the rotated certificate", || {
        let (addr, config, want) = (addr(&gw), config.clone(), pem_der(&second.cert));
        async move {
            let stream = connect(&addr, config).await.unwrap();
            peer_cert(&stream) == want
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        get(&mut kept, "/healthz", true).await.unwrap(),
        200,
        "the kept connection was dropped"
    );
    assert_eq!(
        peer_cert(&kept),
        pem_der(&first.cert),
        "an open session keeps its certificate"
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the rotation",
        ok + failed
    );
    assert!(ok > 0);
}

/// A missing or mismatched file stops the gateway from starting with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_start_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (a, b) = (ca.leaf("a", false), ca.leaf("b", false));
    write(&dir.path().join("a.crt"), &a.cert);
    write(&dir.path().join("b.key"), &b.key);
    write(&dir.path().join("empty.pem"), "");
    let d = dir.path().display();
    for (tls, expected) in [
        (
            format!("cert = \"{d}/missing.crt\"\nkey = \"{d}/b.key\""),
            "missing.crt: No such file",
        ),
        (
            format!("cert = \"{d}/a.crt\"\nkey = \"{d}/b.key\""),
            "do not fit",
        ),
        (
            format!("cert = \"{d}/empty.pem\"\nkey = \"{d}/b.key\""),
            "no PEM `CERTIFICATE` block",
        ),
        (
            format!("cert = \"{d}/a.crt\"\nkey = \"{d}/a.crt\""),
            "no PEM private key",
        ),
    ] {
        let error = gateway()
            .server_config(&format!("[server.tls]\n{tls}\n"))
            .start()
            .await
            .err()
            .unwrap_or_else(|| panic!("started with {tls}"))
            .to_string();
        assert!(error.starts_with("server.tls: "), "{error}");
        assert!(error.contains(expected), "{tls}: {error}");
    }
}
