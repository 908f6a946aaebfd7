//! The seed scenario with Debian's mosquitto clients: `mosquitto_sub -t 'test/#' -v` sees what
//! `mosquitto_pub -t test/terminal -m "test message" -d` publishes. (The Python suite covers
//! the command-line clients more; this keeps the Rust suite honest about them.)
//!
//! Runs against isthmus and, with `ISTHMUS_TEST_PEER=mosquitto`, against mosquitto.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mosquitto_sub` against 127.0.0.1:`port` with `args`; its stdout lines arrive on
/// the receiver as they are printed.
fn mosquitto_sub(port: &str, args: &[&str]) -> (Killed, mpsc::Receiver<String>) {
    let mut sub = Killed(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", port])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub (apt-get install -y mosquitto-clients)"),
    );
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = sub.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (sub, rx)
}

#[test]
fn mosquitto_pub_reaches_mosquitto_sub() {
    let Some(broker) = mqtt_broker(1, "") else { return };
    let port = broker.mqtt_port.to_string();
    for version in ["mqttv311", "mqttv5"] {
        let id = format!("seed-sub-{version}");
        let (_sub, rx) = mosquitto_sub(&port, &["-V", version, "-t", "test/#", "-v", "-i", &id]);
        // mosquitto_sub's stdout is a pipe, so its -d packet log is block-buffered and cannot
        // tell us when the subscription is in; messages are flushed one by one. So publish
        // until one arrives (at most 5 s), then check the line.
        let deadline = Instant::now() + Duration::from_secs(5);
        let want = "test/terminal test message";
        let mut log = Vec::new();
        'publishing: loop {
            assert!(Instant::now() < deadline, "{version}: {want:?} not printed; saw {log:?}");
            let output = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", version])
                .args(["-t", "test/terminal", "-m", "test message", "-d"])
                .output()
                .expect("run mosquitto_pub");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{version}: mosquitto_pub failed: {output:?}");
            assert!(stdout.contains("received CONNACK"), "{version}: {stdout}");
            assert!(stdout.contains("sending PUBLISH"), "{version}: {stdout}");
            assert!(stdout.contains("sending DISCONNECT"), "{version}: {stdout}");
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                let found = line == want;
                log.push(line);
                if found {
                    break 'publishing;
                }
            }
        }
        assert!(log.iter().all(|line| line == want), "{version}: unexpected output {log:?}");
    }
}

/// A `mosquitto_sub` that has been quiet long enough for its connection to go dormant (and
/// whose keep-alive pings were answered while dormant) still gets what `mosquitto_pub` sends.
#[test]
fn a_dormant_mosquitto_sub_still_receives() {
    let toml = "[mqtt]\ndormant_after_ms = 300\n";
    let Some(broker) = isthmus_broker(2, toml, "dormant connections are isthmus's") else { return };
    let port = broker.mqtt_port.to_string();
    let (mut sub, rx) =
        mosquitto_sub(&port, &["-t", "sleepy/#", "-v", "-k", "5", "-i", "dormant-mosquitto-sub"]);
    // Dormant after 0.3 s; mosquitto_sub's smallest keep alive is 5 s, so one PINGREQ goes by
    // while it sleeps.
    std::thread::sleep(Duration::from_secs(6));
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.iter().all(|l| l != "sleepy/a wake up") {
        assert!(Instant::now() < deadline, "not delivered; saw {log:?}");
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-t", "sleepy/a", "-m", "wake up"])
            .status()
            .expect("run mosquitto_pub");
        assert!(status.success());
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            log.push(line);
        }
    }
    // Exactly one line per publish and the subscriber still running: it was never cut.
    assert!(log.iter().all(|l| l == "sleepy/a wake up"), "{log:?}");
    assert!(sub.0.try_wait().unwrap().is_none(), "mosquitto_sub exited");
}
