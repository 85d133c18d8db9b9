//! TLS to the services: a `rediss://` state store against a real redis-server serving
//! TLS, and Kafka clients that take `security.protocol = ssl` (the build links OpenSSL).
//! Production brokers and Redis are often reachable over TLS only; a build without it
//! crash-looped on the first client it created.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_until};
use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseProducer;
use warden::store::redis::RedisStore;
use warden::store::{PartitionWrite, StateStore};

/// A self-signed certificate for 127.0.0.1 (`openssl req`), as `(cert, key)` in `dir`.
fn self_signed(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command (Debian package openssl) makes the test certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// redis-server serving TLS only, on a free port; killed when dropped.
struct TlsRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = self_signed(dir.path());
        let bin = std::env::var("WARDEN_TEST_REDIS_SERVER_BIN")
            .unwrap_or_else(|_| "redis-server".to_owned());
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
            .args(["--tls-ca-cert-file", &cert, "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let listening = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(listening, "redis-server with TLS on {port} did not start");
        TlsRedis {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_rediss_url_is_a_state_store_over_tls() {
    let redis = TlsRedis::start();
    // The certificate is self-signed: `#insecure` skips its verification (a production URL
    // names a host its CA signed, and leaves this out).
    let url = format!("rediss://127.0.0.1:{}/#insecure", redis.port);
    let store = RedisStore::connect(&url, "tls-test", Duration::from_secs(5))
        .await
        .expect("a rediss:// URL connects");
    let epoch = store.acquire(3).await.expect("acquire over TLS");
    let write = PartitionWrite {
        partition: 3,
        epoch,
        offsets: [("usage".to_string(), 42)].into_iter().collect(),
        partners: vec![("p-1".to_string(), b"{\"partner_id\":\"p-1\"}".to_vec())],
        ..Default::default()
    };
    store.commit(write).await.expect("commit over TLS");
    assert_eq!(
        store.load_partner(3, "p-1").await.expect("load over TLS"),
        Some(b"{\"partner_id\":\"p-1\"}".to_vec())
    );
    assert_eq!(store.offsets(3).await.unwrap().get("usage"), Some(&42));
}

#[test]
fn kafka_clients_take_ssl_settings() {
    for protocol in ["ssl", "sasl_ssl"] {
        let created = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("security.protocol", protocol)
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", "warden")
            .set("sasl.password", "secret")
            .create::<BaseProducer>();
        assert!(created.is_ok(), "{protocol}: {:?}", created.err());
    }
}
