//! TLS on the public listener, with certificates generated at test time and real TLS
//! clients: HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3, a renewed certificate served
//! to new connections while an open one keeps working, and the load tester over https.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use support::{TestCollector, batch};
use tollgate_collector::config::{Config, TlsConfig};
use tollgate_collector::{BuildError, Collector, Overrides};
use tollgate_loadtest::generate::Scenario;
use tollgate_loadtest::run::{Model, RunConfig, run};

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files.
struct Pair {
    cert_pem: String,
    der: Vec<u8>,
}

fn write_pair(dir: &Path) -> Pair {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let pair = Pair {
        cert_pem: cert.cert.pem(),
        der: cert.cert.der().to_vec(),
    };
    // Write the key first: a reload that sees the new certificate then finds its key.
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), &pair.cert_pem).unwrap();
    pair
}

fn use_tls(config: &mut Config, dir: &Path) {
    config.server.tls = Some(TlsConfig {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
        reload_interval: Duration::from_millis(100),
    });
}

/// A TLS client trusting `trusted`, speaking only `versions`, offering `alpn`.
fn client_config(
    trusted: &[&Pair],
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for pair in trusted {
        roots.add(CertificateDer::from(pair.der.clone())).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(collector: &TestCollector, config: Arc<rustls::ClientConfig>) -> Tls {
    let tcp = tokio::net::TcpStream::connect(collector.addr)
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

fn post(collector: &TestCollector, ids: &[&str]) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("https://{}/v1/events", collector.addr))
        .header("authorization", "Basic ZGV2Og==") // dev:
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(batch(ids).to_string())))
        .unwrap()
}

/// An HTTP/2 client over an established TLS connection.
async fn http2(tls: Tls) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// Asserts the request was answered 200 with its one event accepted.
async fn accepted_one(
    response: impl std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
) {
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_picks_h2_or_http1_and_tls12_and_tls13_both_work() {
    let dir = tempfile::tempdir().unwrap();
    let pair = write_pair(dir.path());
    let collector =
        TestCollector::start_with(|c| use_tls(c, dir.path()), Overrides::default()).await;

    let all = [&rustls::version::TLS13, &rustls::version::TLS12];
    let tls = connect(
        &collector,
        client_config(&[&pair], &all, &[b"h2", b"http/1.1"]),
    )
    .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let mut h2 = http2(tls).await;
    accepted_one(h2.send_request(post(&collector, &["tls-h2-0001"]))).await;

    let only12 = [&rustls::version::TLS12];
    let tls = connect(&collector, client_config(&[&pair], &only12, &[b"http/1.1"])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    accepted_one(h1.send_request(post(&collector, &["tls-h1-0001"]))).await;

    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", collector.addr))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    assert_eq!(collector.events().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_new_connections_and_open_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_pair(dir.path());
    let collector =
        TestCollector::start_with(|c| use_tls(c, dir.path()), Overrides::default()).await;
    let all = [&rustls::version::TLS13, &rustls::version::TLS12];

    // An HTTP/2 connection opened under the old certificate.
    let tls = connect(&collector, client_config(&[&old], &all, &[b"h2"])).await;
    let leaf = |tls: &Tls| tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(leaf(&tls), old.der);
    let mut open = http2(tls).await;
    accepted_one(open.send_request(post(&collector, &["renew-000001"]))).await;

    // Renew the files; the collector notices within its reload interval.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let new = write_pair(dir.path());
    let both = client_config(&[&old, &new], &all, &[b"h2"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tls = connect(&collector, both.clone()).await;
        if leaf(&tls) == new.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The connection opened before the renewal still carries requests.
    accepted_one(open.send_request(post(&collector, &["renew-000002"]))).await;
    assert!(
        collector
            .metrics()
            .await
            .contains("tollgate_tls_reloads_total{outcome=\"reloaded\"}")
    );

    // A broken renewal is counted, and the last good pair keeps being served.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !collector
        .metrics()
        .await
        .contains("tollgate_tls_reloads_total{outcome=\"failed\"}")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failed reload was never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = connect(&collector, both).await;
    assert_eq!(leaf(&tls), new.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_runs_over_https() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path());
    let collector =
        TestCollector::start_with(|c| use_tls(c, dir.path()), Overrides::default()).await;
    for http2 in [false, true] {
        let report = run(RunConfig {
            targets: vec![format!("https://127.0.0.1:{}", collector.addr.port())],
            write_key: "dev".into(),
            model: Model::Closed { connections: 4 },
            duration: None,
            requests: Some(50),
            seed: 3,
            run_id: format!("tls{http2}"),
            scenario: Scenario {
                invalid_rate: 0.0,
                retry_rate: 0.0,
                ..Scenario::default()
            },
            manifest: None,
            http2,
            gzip: false,
            ca_file: Some(dir.path().join("cert.pem")),
            scrape: None,
        })
        .await
        .unwrap();
        assert_eq!(
            report.outcomes.statuses.get(&200),
            Some(&50),
            "{:?}",
            report.outcomes
        );
    }
}

#[test]
fn a_bad_certificate_path_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::test_config(dir.path());
    config.server.tls = Some(TlsConfig {
        cert_file: dir.path().join("missing-cert.pem"),
        key_file: dir.path().join("missing-key.pem"),
        reload_interval: Duration::from_secs(10),
    });
    let Err(error) = Collector::build(config) else {
        panic!("a collector with a missing certificate must not start");
    };
    assert!(matches!(error, BuildError::Tls(_)));
    assert!(error.to_string().contains("missing-cert.pem"), "{error}");
}
