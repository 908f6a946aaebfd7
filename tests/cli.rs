//! The `isthmus` command as a user meets it: the default config, startup errors, the ready
//! line, a clean exit on SIGTERM, and `isthmus doctor`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn isthmus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_isthmus"))
}

/// Starts `command` (a broker) with stdout piped and returns it with its first line, the ready
/// line.
fn spawn_ready(command: &mut Command) -> (std::process::Child, String) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (child, line)
}

#[test]
fn version_names_the_commit_the_binary_was_built_from() {
    let output = isthmus().arg("--version").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    // Built in a git checkout (CI clones one): the commit is that checkout's HEAD.
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let expected = format!("isthmus {} ({head})", env!("CARGO_PKG_VERSION"));
    assert_eq!(text.trim(), expected);
    assert_eq!(isthmus_loadtest::compare::version_commit(&text), Some(head.as_str()));
}

#[test]
fn config_default_prints_a_file_that_parses_to_the_defaults() {
    let output = isthmus().args(["config", "--default"]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("[nats]") && text.contains("max_payload = 1048576"), "{text}");
    assert!(text.contains("[mqtt]") && text.contains("max_packet_bytes = 1048576"), "{text}");
    let parsed = isthmus::config::Config::from_toml(&text).unwrap();
    assert_eq!(parsed, isthmus::config::Config::default());
}

#[test]
fn port_in_use_is_a_clear_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (flag, other) in [("--nats-listen", "--mqtt-listen"), ("--mqtt-listen", "--nats-listen")] {
        let output = isthmus()
            .args(["serve", "--shards", "1", flag, &addr, other, "127.0.0.1:0"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{flag} {addr}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("address already in use"), "{flag}: stderr: {stderr}");
        assert!(stderr.contains(&addr), "{flag}: the error names the address: {stderr}");
        assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    }
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
    let (mut child, line) = spawn_ready(
        isthmus()
            .args(["serve", "--shards", "2", "--nats-listen", "127.0.0.1:0"])
            .args(["--mqtt-listen", "127.0.0.1:0"])
            .stderr(Stdio::null()),
    );
    // `ready nats=127.0.0.1:P mqtt=127.0.0.1:Q shards=2`
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "ready line: {line:?}");
    assert_eq!(fields[0], "ready", "{line:?}");
    assert_eq!(fields[3], "shards=2", "{line:?}");
    let addr = fields[1].strip_prefix("nats=127.0.0.1:").map(|p| format!("127.0.0.1:{p}"));
    let addr = addr.unwrap_or_else(|| panic!("nats= field in {line:?}"));
    let mqtt = fields[2].strip_prefix("mqtt=127.0.0.1:").map(|p| format!("127.0.0.1:{p}"));
    let mqtt = mqtt.unwrap_or_else(|| panic!("mqtt= field in {line:?}"));
    assert_ne!(addr, mqtt, "{line:?}");
    assert!(!mqtt.ends_with(":0"), "the picked MQTT port is reported: {line:?}");
    let client = std::net::TcpStream::connect(&addr).unwrap();
    let mqtt_client = std::net::TcpStream::connect(&mqtt).unwrap();
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
    drop(mqtt_client);
    assert!(std::net::TcpStream::connect(&addr).is_err(), "still accepting after exit");
    assert!(std::net::TcpStream::connect(&mqtt).is_err(), "MQTT still accepting after exit");
}

/// Reads the `ready` line's NATS and MQTT addresses.
fn ready_addrs(line: &str) -> (String, String) {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {line:?}"))
            .to_string()
    };
    (field("nats="), field("mqtt="))
}

/// A broker restarted at once on the ports it had, while the connections it closed are in
/// TIME_WAIT (what `systemctl restart` does to a busy broker), must get its ports back.
#[test]
fn restart_on_the_same_ports_with_connections_in_time_wait() {
    let serve = |nats: &str, mqtt: &str| {
        let mut command = isthmus();
        command.args(["serve", "--shards", "2", "--nats-listen", nats, "--mqtt-listen", mqtt]);
        command.stderr(Stdio::piped());
        command
    };
    let (mut first, line) = spawn_ready(&mut serve("127.0.0.1:0", "127.0.0.1:0"));
    let (nats, mqtt) = ready_addrs(&line);
    // Accepted connections: the NATS INFO line, the MQTT CONNACK.
    let mut nats_client = std::net::TcpStream::connect(&nats).unwrap();
    let mut info = String::new();
    BufReader::new(nats_client.try_clone().unwrap()).read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO "), "{info:?}");
    let mut mqtt_client = std::net::TcpStream::connect(&mqtt).unwrap();
    use std::io::{Read, Write};
    mqtt_client.write_all(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a").unwrap();
    let mut connack = [0u8; 4];
    mqtt_client.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // The broker goes first (its side then ends in TIME_WAIT once the clients close too).
    first.kill().unwrap();
    first.wait().unwrap();
    let _ = nats_client.write_all(b"PING\r\n");
    drop(nats_client);
    drop(mqtt_client);
    std::thread::sleep(Duration::from_millis(100));
    let (mut second, line) = spawn_ready(&mut serve(&nats, &mqtt));
    let stderr = if line.is_empty() {
        let mut text = String::new();
        let _ = second.stderr.take().unwrap().read_to_string(&mut text);
        text
    } else {
        String::new()
    };
    let _ = second.kill();
    let _ = second.wait();
    assert!(!line.is_empty(), "restart on the same ports failed: {stderr}");
    assert_eq!(ready_addrs(&line), (nats, mqtt));
}

#[test]
fn mqtt_listen_from_the_config_file() {
    let path = std::env::temp_dir().join(format!("isthmus-mqtt-{}.toml", std::process::id()));
    std::fs::write(&path, "[mqtt]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let (mut child, line) = spawn_ready(
        isthmus()
            .args(["serve", "--shards", "1", "--nats-listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .stderr(Stdio::null()),
    );
    let _ = std::fs::remove_file(&path);
    let mqtt = line.split_whitespace().find_map(|f| f.strip_prefix("mqtt=")).map(str::to_string);
    let connected = mqtt.as_deref().map(std::net::TcpStream::connect);
    let _ = child.kill();
    let _ = child.wait();
    let mqtt = mqtt.unwrap_or_else(|| panic!("no mqtt= in {line:?}"));
    assert!(mqtt.starts_with("127.0.0.1:") && !mqtt.ends_with(":0"), "{line:?}");
    assert!(connected.unwrap().is_ok(), "cannot connect to {mqtt}");
}

#[test]
fn doctor_prints_this_hosts_values_and_exits_zero() {
    // Buffers charged by the 4 KiB page, whatever the host's transparent huge pages.
    let output = isthmus()
        .args(["doctor", "--shards", "3"])
        .env("MIMALLOC_ALLOW_THP", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "a WARN is advice, not a failure");
    let text = String::from_utf8(output.stdout).unwrap();
    let rows = doctor_rows(&text);
    let shell = |command: &str| {
        let out = Command::new("sh").args(["-c", command]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let proc_value = |path: &str| std::fs::read_to_string(path).unwrap().trim().to_string();
    // The child inherits this test's limits, as does the shell.
    assert_eq!(rows["RLIMIT_NOFILE (soft)"][2], shell("ulimit -n"), "{text}");
    assert_eq!(rows["RLIMIT_NOFILE (hard)"][2], shell("ulimit -Hn"), "{text}");
    assert_eq!(rows["kernel"][2], proc_value("/proc/sys/kernel/osrelease"), "{text}");
    assert_eq!(rows["fs.file-max"][2], proc_value("/proc/sys/fs/file-max"), "{text}");
    assert_eq!(rows["fs.nr_open"][2], proc_value("/proc/sys/fs/nr_open"), "{text}");
    assert!(rows["CPUs vs shards"][2].ends_with(", 3 shards"), "{text}");
    // 3 shards x 3 rings x the default 128 KiB io_memory_bytes.
    assert!(rows["RLIMIT_MEMLOCK"][3].starts_with(">= 1179648 "), "{text}");
    for setting in [
        "kernel.io_uring_disabled",
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_tw_reuse",
        "net.ipv4.tcp_fin_timeout",
        "net.core.rmem_max",
        "net.ipv4.tcp_wmem",
        "net.core.netdev_max_backlog",
        "net.netfilter.nf_conntrack_max",
        "transparent_hugepage/enabled",
        "vm.swappiness",
        "server.pin_cores",
        "cpufreq governor",
        "clocksource",
        "irqbalance",
    ] {
        assert!(rows.contains_key(setting), "no {setting} row in {text}");
    }
    assert!(rows.keys().any(|k| k.starts_with("NIC ")), "no NIC row in {text}");
    for (setting, columns) in &rows {
        assert!(["OK", "WARN", "-"].contains(&columns[0].as_str()), "{setting}: {columns:?}");
    }
}

#[test]
fn doctor_reads_the_config_and_strict_fails_on_warnings() {
    let path = std::env::temp_dir().join(format!("isthmus-doctor-{}.toml", std::process::id()));
    std::fs::write(&path, "[server]\nshards = 2\nio_memory_bytes = 1048576\n").unwrap();
    let mut doctor = isthmus();
    doctor.args(["doctor", "--strict", "--config"]).arg(&path).env("MIMALLOC_ALLOW_THP", "0");
    let output = doctor.output().unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8(output.stdout).unwrap();
    let rows = doctor_rows(&text);
    assert!(rows["RLIMIT_MEMLOCK"][3].starts_with(">= 6291456 "), "{text}");
    let warned = rows.values().any(|columns| columns[0] == "WARN");
    assert_eq!(output.status.code(), Some(i32::from(warned)), "{text}");

    let missing = std::env::temp_dir().join("isthmus-doctor-no-such-file.toml");
    let output = isthmus().args(["doctor", "--config"]).arg(&missing).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
}

/// `isthmus doctor` rows by setting: [status, setting, current, recommended]. Columns are
/// separated by at least two spaces; hint lines are indented and skipped.
fn doctor_rows(text: &str) -> std::collections::HashMap<String, Vec<String>> {
    text.lines()
        .skip(2)
        .filter(|line| !line.starts_with(' '))
        .map(|line| {
            let columns: Vec<String> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            assert_eq!(columns.len(), 4, "{line:?}");
            (columns[1].clone(), columns)
        })
        .collect()
}

/// Under `taskset -c <last cpu>` every shard runs on that CPU, not on CPU `i`: pinning follows
/// the CPUs the process is allowed, in order.
#[test]
fn shards_pin_to_the_cpus_the_process_is_allowed() {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cpus < 2 || Command::new("taskset").arg("--version").output().is_err() {
        eprintln!("note: needs 2 CPUs and taskset; skipped");
        return;
    }
    let last = (cpus - 1).to_string();
    let (mut child, line) = spawn_ready(
        Command::new("taskset")
            .args(["-c", &last, env!("CARGO_BIN_EXE_isthmus"), "serve", "--shards", "2"])
            .args(["--nats-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0"])
            .stderr(Stdio::null()),
    );
    assert!(line.starts_with("ready "), "{line:?}");
    let mut shards = std::collections::BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.starts_with("shard-") {
            continue;
        }
        shards.insert(comm.trim().to_string());
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let allowed = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).unwrap();
        assert_eq!(allowed.split_whitespace().nth(1), Some(last.as_str()), "{comm}: {allowed}");
    }
    // glommio names each executor's threads `shard-<id>-<n>`.
    assert_eq!(shards.len(), 2, "shard threads found: {shards:?}");
    child.kill().unwrap();
    let _ = child.wait();
}

/// `serve` raises the soft descriptor limit to the hard one (one descriptor per device).
#[test]
fn serve_raises_the_open_files_limit_to_the_hard_limit() {
    let script = format!(
        "ulimit -Sn 512 && exec {} serve --shards 1 --nats-listen 127.0.0.1:0 \
         --mqtt-listen 127.0.0.1:0 --log warn",
        env!("CARGO_BIN_EXE_isthmus")
    );
    let (mut child, line) = spawn_ready(Command::new("bash").args(["-c", &script]));
    assert!(line.starts_with("ready "), "{line:?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let row = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = row.split_whitespace().collect();
    // "Max open files <soft> <hard> files"
    assert_eq!(fields[3], fields[4], "{row}");
    assert_ne!(fields[3], "512", "{row}");
    child.kill().unwrap();
    let _ = child.wait();
}

/// The binary applies `[server]` allocator settings (a MIMALLOC_* variable wins): the log names
/// the values mimalloc reports back, and with huge pages off the kernel has THP off for the
/// process. A wrong option index in main.rs would log some other option's value.
#[test]
fn allocator_settings_come_from_the_config_unless_the_environment_sets_them() {
    let path = std::env::temp_dir().join(format!("isthmus-alloc-{}.toml", std::process::id()));
    std::fs::write(&path, "[server]\nallocator_purge_delay_ms = 2500\n").unwrap();
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Env, &str, &str); 3] = [
        (&[], "purge_delay_ms=10000 huge_pages=false", "0"),
        (
            &[("MIMALLOC_PURGE_DELAY", "4321"), ("MIMALLOC_ALLOW_THP", "1")],
            "purge_delay_ms=4321 huge_pages=true",
            "1",
        ),
        (&[("CONFIG", "")], "purge_delay_ms=2500 huge_pages=false", "0"),
    ];
    for (env, logged, thp_enabled) in cases {
        let mut command = isthmus();
        command.args(["serve", "--shards", "1", "--nats-listen", "127.0.0.1:0"]);
        command.args(["--mqtt-listen", "127.0.0.1:0", "--log", "isthmus=info"]);
        command
            .env("NO_COLOR", "1")
            .env_remove("MIMALLOC_PURGE_DELAY")
            .env_remove("MIMALLOC_ALLOW_THP");
        for (key, value) in env {
            if *key == "CONFIG" {
                command.arg("--config").arg(&path);
            } else {
                command.env(key, value);
            }
        }
        command.stderr(Stdio::piped());
        let (mut child, line) = spawn_ready(&mut command);
        assert!(line.starts_with("ready "), "{line:?}");
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let thp = status.lines().find(|l| l.starts_with("THP_enabled:"));
        child.kill().unwrap();
        let _ = child.wait();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let stderr = strip_ansi(&stderr);
        assert!(stderr.contains(&format!("allocator {logged}")), "{env:?}: {stderr}");
        if let Some(thp) = thp {
            assert_eq!(thp.split_whitespace().nth(1), Some(thp_enabled), "{env:?}: {thp}");
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
