//! TLS listeners with real clients: MQTT over TLS (rumqttc with rustls, mosquitto_pub/sub with
//! OpenSSL), NATS over TLS (async-nats), a plaintext client on a TLS-only NATS listener, and
//! client certificates (mTLS) on both.
//!
//! Certificates are made at run time with rcgen (a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate with CN `device-42`) in a temporary directory; no key is
//! committed. The broker runs in this process, so its counters can be read.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const TEST_LIMIT: Duration = Duration::from_secs(20);
const RECV: Duration = Duration::from_secs(5);
const CLIENT_CN: &str = "device-42";

/// A test PKI in a temporary directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = std::env::temp_dir().join(format!("isthmus-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "isthmus test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            (params.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
        };
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (server, server_key) = leaf(names, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (client, client_key) = leaf(vec![], CLIENT_CN, ExtendedKeyUsagePurpose::ClientAuth);
        for (file, text) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server),
            ("server-key.pem", server_key),
            ("client.pem", client),
            ("client-key.pem", client_key),
        ] {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap()
    }

    /// A `[<table>.tls]` body with this PKI's server certificate (and client CA for mTLS).
    fn tls_table(&self, mtls: bool) -> String {
        let mut table = format!(
            "cert_file = {:?}\nkey_file = {:?}\n",
            self.path("server.pem"),
            self.path("server-key.pem")
        );
        if mtls {
            table.push_str(&format!("client_ca_file = {:?}\n", self.path("ca.pem")));
        }
        table
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// rumqttc and async-nats build rustls client configs with the process default provider;
/// this test binary links both ring and aws-lc-rs, so one must be named.
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An in-process broker with `[mqtt.tls]` on a free port and, if `nats_tls` is given, a TLS-only
/// NATS listener with it.
fn broker(
    shards: usize,
    pki: &Pki,
    mqtt_mtls: bool,
    nats_tls: Option<bool>,
) -> isthmus::serve::Running {
    install_crypto_provider();
    let mut toml =
        format!("[mqtt]\n[mqtt.tls]\nlisten = \"127.0.0.1:0\"\n{}", pki.tls_table(mqtt_mtls));
    if let Some(mtls) = nats_tls {
        toml.push_str(&format!("[nats]\n[nats.tls]\n{}", pki.tls_table(mtls)));
    }
    in_process_toml(shards, &toml)
}

fn tls_port(running: &isthmus::serve::Running) -> u16 {
    running.mqtt_tls_addr().expect("mqtt.tls listener").port()
}

/// A connected rumqttc 3.1.1 client over TLS, and its incoming publishes.
struct TlsMqtt {
    client: AsyncClient,
    publishes: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
}

/// Connects over TLS (with the client certificate if `client_cert`), waiting for CONNACK.
/// `Err` carries the event loop's error.
async fn mqtt_tls(port: u16, id: &str, pki: &Pki, client_cert: bool) -> Result<TlsMqtt, String> {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let client_auth = client_cert.then(|| (pki.read("client.pem"), pki.read("client-key.pem")));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: pki.read("ca.pem"),
        alpn: None,
        client_auth,
    }));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let connack = tokio::time::timeout(RECV, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no CONNACK within 5 s".to_string())??;
    assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
    let (tx, publishes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event {
                if tx.send(publish).is_err() {
                    return;
                }
            }
        }
    });
    Ok(TlsMqtt { client, publishes })
}

impl TlsMqtt {
    async fn next_publish(&mut self) -> rumqttc::Publish {
        tokio::time::timeout(RECV, self.publishes.recv())
            .await
            .expect("a PUBLISH within 5 s")
            .expect("event loop alive")
    }
}

fn nats_tls_options(pki: &Pki) -> async_nats::ConnectOptions {
    nats_options().require_tls(true).add_root_certificates(pki.path("ca.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_reaches_plain_nats_and_back_across_shards() {
    let pki = Pki::new("mqtt-nats");
    let running = broker(2, &pki, false, None);
    let port = tls_port(&running);
    within(TEST_LIMIT, async {
        let nats = nats_options().connect(running.nats_addr().to_string()).await.unwrap();
        let mut from_mqtt = nats.subscribe("tls.up.>").await.unwrap();
        nats.flush().await.unwrap();
        // 16 client ids: each connection is accepted on either shard and served on its id's
        // home shard, so (all but surely) some TLS sessions are handed to the other shard.
        let mut clients = Vec::new();
        for i in 0..16 {
            let mqtt = mqtt_tls(port, &format!("tls-client-{i}"), &pki, false).await.unwrap();
            mqtt.client.subscribe(format!("tls/down/{i}"), QoS::AtLeastOnce).await.unwrap();
            clients.push(mqtt);
        }
        assert!(counter(&running, |s| &s.mqtt_handoffs) > 0, "no TLS session changed shards");
        for (i, mqtt) in clients.iter().enumerate() {
            let payload = format!("up {i}");
            mqtt.client
                .publish(format!("tls/up/{i}"), QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..16 {
            let msg = tokio::time::timeout(RECV, from_mqtt.next()).await.unwrap().unwrap();
            let i: usize = msg.subject.as_str().strip_prefix("tls.up.").unwrap().parse().unwrap();
            assert_eq!(msg.payload.as_ref(), format!("up {i}").as_bytes());
            seen.insert(i);
        }
        assert_eq!(seen.len(), 16);
        // NATS -> MQTT over TLS, after the subscriptions are surely in: publish until one lands.
        for (i, mqtt) in clients.iter_mut().enumerate() {
            let subject = format!("tls.down.{i}");
            let deadline = Instant::now() + RECV;
            loop {
                nats.publish(subject.clone(), "down".into()).await.unwrap();
                nats.flush().await.unwrap();
                let got = tokio::time::timeout(Duration::from_millis(200), mqtt.publishes.recv());
                if let Ok(Some(publish)) = got.await {
                    assert_eq!(publish.topic, format!("tls/down/{i}"));
                    assert_eq!(&publish.payload[..], b"down");
                    break;
                }
                assert!(Instant::now() < deadline, "client {i} got nothing from NATS");
            }
        }
        assert_eq!(counter(&running, |s| &s.tls_handshake_failures), 0);
        assert_eq!(counter(&running, |s| &s.mqtt_dormant), 0);
    })
    .await;
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_do_not_go_dormant() {
    let pki = Pki::new("dormant");
    install_crypto_provider();
    let toml = format!(
        "[mqtt]\ndormant_after_ms = 300\n[mqtt.tls]\nlisten = \"127.0.0.1:0\"\n{}",
        pki.tls_table(false)
    );
    let running = in_process_toml(1, &toml);
    let port = tls_port(&running);
    within(TEST_LIMIT, async {
        let mut mqtt = mqtt_tls(port, "tls-sleepy", &pki, false).await.unwrap();
        mqtt.client.subscribe("sleepy/t", QoS::AtMostOnce).await.unwrap();
        // Several dormancy periods of silence (the sweeper runs every 250 ms).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(counter(&running, |s| &s.mqtt_dormant), 0, "a TLS connection went dormant");
        mqtt.client.publish("sleepy/t", QoS::AtMostOnce, false, "still here").await.unwrap();
        assert_eq!(&mqtt.next_publish().await.payload[..], b"still here");
    })
    .await;
    running.stop();
}

#[test]
fn mosquitto_clients_over_tls() {
    let pki = Pki::new("mosquitto");
    let running = broker(2, &pki, false, None);
    let port = tls_port(&running).to_string();
    let ca = pki.path("ca.pem");
    let tls_args = ["-h", "localhost", "-p", &port, "--cafile", ca.to_str().unwrap()];
    let mut sub = Command::new("mosquitto_sub")
        .args(tls_args)
        .args(["-t", "mosq/#", "-v", "-C", "1", "-W", "10", "-i", "tls-mosq-sub"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mosquitto_sub (apt-get install -y mosquitto-clients)");
    let stdout = sub.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // mosquitto_sub cannot say when its subscription is in: publish until it prints.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let status = Command::new("mosquitto_pub")
            .args(tls_args)
            .args(["-t", "mosq/tls", "-m", "over tls", "-q", "1", "-i", "tls-mosq-pub"])
            .status()
            .expect("spawn mosquitto_pub");
        assert!(status.success(), "mosquitto_pub over TLS failed: {status}");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
        assert!(Instant::now() < deadline, "mosquitto_sub printed nothing");
    };
    assert_eq!(line, "mosq/tls over tls");
    let _ = sub.kill();
    let _ = sub.wait();
    assert_eq!(counter(&running, |s| &s.tls_handshake_failures), 0);
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_async_nats() {
    let pki = Pki::new("nats");
    let running = broker(2, &pki, false, Some(false));
    let url = format!("nats://127.0.0.1:{}", running.nats_addr().port());
    within(TEST_LIMIT, async {
        let subscriber = nats_tls_options(&pki).connect(&url).await.expect("TLS connect");
        let publisher = nats_tls_options(&pki).connect(&url).await.expect("TLS connect");
        let info = subscriber.server_info();
        assert!(info.tls_required, "{info:?}");
        let mut sub = subscriber.subscribe("secure.>").await.unwrap();
        sync_interest(&subscriber, &publisher).await;
        // Large enough to span several TLS records.
        let big = vec![b'x'; 200_000];
        publisher.publish("secure.big", big.clone().into()).await.unwrap();
        publisher.publish("secure.small", "hi".into()).await.unwrap();
        publisher.flush().await.unwrap();
        let msg = tokio::time::timeout(RECV, sub.next()).await.unwrap().unwrap();
        assert_eq!((msg.subject.as_str(), msg.payload.len()), ("secure.big", big.len()));
        let msg = tokio::time::timeout(RECV, sub.next()).await.unwrap().unwrap();
        assert_eq!(msg.payload.as_ref(), b"hi");
        // An MQTT-over-TLS publish reaches the NATS-over-TLS subscriber.
        let mqtt = mqtt_tls(tls_port(&running), "tls-to-nats", &pki, false).await.unwrap();
        mqtt.client.publish("secure/mqtt", QoS::AtLeastOnce, false, "from mqtt").await.unwrap();
        let msg = tokio::time::timeout(RECV, sub.next()).await.unwrap().unwrap();
        assert_eq!(
            (msg.subject.as_str(), msg.payload.as_ref()),
            ("secure.mqtt", &b"from mqtt"[..])
        );
    })
    .await;
    assert_eq!(counter(&running, |s| &s.tls_handshake_failures), 0);
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_on_tls_nats_listener_gets_err() {
    let pki = Pki::new("plain");
    let running = broker(1, &pki, false, Some(false));
    within(TEST_LIMIT, async {
        let stream = tokio::net::TcpStream::connect(running.nats_addr()).await.unwrap();
        let mut stream = tokio::io::BufReader::new(stream);
        let mut info = String::new();
        stream.read_line(&mut info).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(info.strip_prefix("INFO ").unwrap()).unwrap();
        assert_eq!(json["tls_required"], true, "{info}");
        assert!(json.get("tls_verify").is_none(), "{info}");
        stream.get_mut().write_all(b"CONNECT {}\r\nPING\r\n").await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(RECV, stream.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&rest), "-ERR 'Secure Connection - TLS Required'\r\n");
    })
    .await;
    assert_eq!(counter(&running, |s| &s.tls_handshake_failures), 1);
    running.stop();
}

/// The INFO a plaintext socket gets from the TLS NATS listener.
async fn raw_info(addr: std::net::SocketAddr) -> serde_json::Value {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(stream).read_line(&mut line).await.unwrap();
    serde_json::from_str(line.strip_prefix("INFO ").expect("INFO first")).unwrap()
}

/// Log lines of this process (the in-process broker's debug events), for the mTLS identity.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("isthmus=debug"))
            .with_ansi(false)
            .with_writer(move || LogSink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        logs
    }))
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `tls_identity` the broker recorded for connection `cid`.
fn logged_identity(logs: &Mutex<Vec<u8>>, cid: u64) -> Option<String> {
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    logs.lines()
        .filter(|line| line.contains("TLS client certificate verified"))
        .filter(|line| line.contains(&format!("cid={cid} ")))
        .find_map(|line| {
            line.split("tls_identity=").nth(1).map(|v| v.trim_matches('"').to_string())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate_and_records_the_cn() {
    let logs = captured_logs();
    let pki = Pki::new("mtls");
    let running = broker(2, &pki, true, Some(true));
    let url = format!("nats://127.0.0.1:{}", running.nats_addr().port());
    within(TEST_LIMIT, async {
        // NATS: no client certificate -> the handshake fails; with one -> connected.
        let refused = nats_tls_options(&pki).connect(&url);
        let refused = tokio::time::timeout(Duration::from_secs(3), refused).await;
        assert!(!matches!(refused, Ok(Ok(_))), "a NATS client without a certificate got in");
        let client = nats_tls_options(&pki)
            .add_client_certificate(pki.path("client.pem"), pki.path("client-key.pem"))
            .connect(&url)
            .await
            .expect("NATS with a client certificate");
        let info = client.server_info();
        assert!(info.tls_required, "{info:?}");
        let plain_info = raw_info(running.nats_addr()).await;
        assert_eq!(
            (&plain_info["tls_required"], &plain_info["tls_verify"]),
            (&true.into(), &true.into())
        );
        client.flush().await.unwrap();
        let cid = info.client_id;
        let deadline = Instant::now() + RECV;
        while logged_identity(&logs, cid).is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(logged_identity(&logs, cid).as_deref(), Some(CLIENT_CN));

        // MQTT: the same.
        let port = tls_port(&running);
        let refused = mqtt_tls(port, "mtls-none", &pki, false).await;
        assert!(refused.is_err(), "an MQTT client without a certificate got in");
        let mut mqtt =
            mqtt_tls(port, "mtls-device", &pki, true).await.expect("MQTT with a certificate");
        mqtt.client.subscribe("mtls/echo", QoS::AtMostOnce).await.unwrap();
        let deadline = Instant::now() + RECV;
        loop {
            mqtt.client.publish("mtls/echo", QoS::AtMostOnce, false, "me").await.unwrap();
            let got = tokio::time::timeout(Duration::from_millis(200), mqtt.publishes.recv());
            if got.await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "no echo over mTLS");
        }
        let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        let mqtt_identities = text
            .lines()
            .filter(|l| l.contains("TLS client certificate verified"))
            .filter(|l| l.contains(&format!("tls_identity=\"{CLIENT_CN}\"")))
            .count();
        assert!(mqtt_identities >= 2, "NATS and MQTT identities logged:\n{text}");
    })
    .await;
    assert!(counter(&running, |s| &s.tls_handshake_failures) >= 2);
    running.stop();
}

#[test]
fn bad_certificate_files_stop_the_start() {
    let pki = Pki::new("bad");
    install_crypto_provider();
    let toml = format!(
        "[mqtt.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.path("server.pem"),
        pki.path("no-such-key.pem")
    );
    let mut config = isthmus::config::Config::from_toml(&toml).unwrap();
    config.nats.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.listen = "127.0.0.1:0".parse().unwrap();
    let error = isthmus::serve::start(config).err().expect("a missing key file is an error");
    assert!(error.contains("mqtt.tls") && error.contains("no-such-key.pem"), "{error}");
}

/// Handshake rate, for docs/tls.md: `cargo test --release --test tls handshake_rate --
/// --ignored --nocapture`. Two client threads each open TLS connections to the MQTT-over-TLS
/// listener one after another (new TCP connection, TLS 1.3 handshake with a P-256 certificate,
/// CONNECT, CONNACK, close) for a fixed time; both ends share this machine's cores.
#[test]
#[ignore = "a measurement, not a check"]
fn handshake_rate() {
    let pki = Pki::new("rate");
    let running = broker(2, &pki, false, None);
    let port = tls_port(&running);
    let mut roots = rustls::RootCertStore::empty();
    let ca = pki.read("ca.pem");
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Arc::new(config);
    let run_for = Duration::from_secs(5);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut done = 0u64;
                while started.elapsed() < run_for {
                    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                    let mut session =
                        rustls::ClientConnection::new(Arc::clone(&config), name.to_owned())
                            .unwrap();
                    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    tcp.set_nodelay(true).unwrap();
                    let mut tls = rustls::Stream::new(&mut session, &mut tcp);
                    let id = format!("rate-{t}-{done}");
                    let mut connect = vec![0x10, (12 + id.len()) as u8, 0, 4];
                    connect.extend_from_slice(b"MQTT\x04\x02\x00\x3c");
                    connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
                    connect.extend_from_slice(id.as_bytes());
                    tls.write_all(&connect).unwrap();
                    let mut connack = [0u8; 4];
                    std::io::Read::read_exact(&mut tls, &mut connack).unwrap();
                    assert_eq!(connack, [0x20, 2, 0, 0]);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let rate = total as f64 / run_for.as_secs_f64();
    println!(
        "{{\"tls_handshakes\": {total}, \"seconds\": {}, \"per_second\": {rate:.0}}}",
        run_for.as_secs()
    );
    assert_eq!(counter(&running, |s| &s.tls_handshake_failures), 0);
    running.stop();
}
