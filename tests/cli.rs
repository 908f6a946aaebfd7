//! The `isthmus` command as a user meets it: the default config, startup errors, the ready
//! line, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn isthmus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_isthmus"))
}

#[test]
fn config_default_prints_a_file_that_parses_to_the_defaults() {
    let output = isthmus().args(["config", "--default"]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("[nats]") && text.contains("max_payload = 1048576"), "{text}");
    let parsed = isthmus::config::Config::from_toml(&text).unwrap();
    assert_eq!(parsed, isthmus::config::Config::default());
}

#[test]
fn port_in_use_is_a_clear_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = isthmus()
        .args(["serve", "--shards", "1", "--nats-listen", &addr])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("address already in use"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn bad_config_file_is_a_clear_error() {
    let path = std::env::temp_dir().join(format!("isthmus-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "[nats]\nmax_payloadd = 5\n").unwrap();
    let output = isthmus().args(["serve", "--config"]).arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_payloadd"), "stderr: {stderr}");
}

#[test]
fn ready_line_then_sigterm_exits_zero() {
    let mut child = isthmus()
        .args(["serve", "--shards", "2", "--nats-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("ready nats=127.0.0.1:") && line.trim_end().ends_with("shards=2"));
    let addr = line.split_whitespace().nth(1).unwrap().trim_start_matches("nats=").to_string();
    let client = std::net::TcpStream::connect(&addr).unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "isthmus did not exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    drop(client);
    assert!(std::net::TcpStream::connect(&addr).is_err(), "still accepting after exit");
}
