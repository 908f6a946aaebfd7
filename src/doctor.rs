//! `isthmus doctor`: the host settings a dedicated broker depends on, read from `/proc`, `/sys`
//! and `getrlimit`, printed next to the values tuning/README.md recommends, OK or WARN per row.
//!
//! It owns reading and judging those settings and changes none of them. A WARN is advice: most
//! hosts that warn still run the broker. Reading ([`Host::read`]) is kept apart from judging
//! ([`rows`]) so that the rules are tested on made-up hosts. Limits, capabilities and groups are
//! those of the process that runs `doctor`, and network sysctls those of its network namespace:
//! run it as the service user, where the broker runs.

use crate::config::Config;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Verdict of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The host meets the recommendation.
    Ok,
    /// The host differs from the recommendation; the row's hint says what to change.
    Warn,
    /// The setting does not exist here (no cpufreq on a VM, conntrack not loaded).
    Absent,
}

impl Status {
    /// The label printed in the status column.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Absent => "-",
        }
    }
}

/// One setting: its value here, the recommended value, and the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The setting's name as the user would look it up (sysctl key, rlimit, sysfs item).
    pub setting: String,
    /// The value on this host.
    pub current: String,
    /// The recommended value, with its reason when short.
    pub recommended: String,
    /// OK, WARN or absent.
    pub status: Status,
    /// What to change, printed under WARN rows.
    pub hint: &'static str,
}

/// What the configured broker needs from the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// Shards the configuration runs.
    pub shards: usize,
    /// `server.pin_cores`.
    pub pin_cores: bool,
    /// `server.io_memory_bytes`.
    pub io_memory_bytes: u64,
    /// Concurrent client connections the host is sized for (`--connections`).
    pub connections: u64,
    /// `server.allocator_huge_pages`.
    pub huge_pages: bool,
}

impl Needs {
    /// The needs of `config` on this host, sized for `connections` clients.
    pub fn new(config: &Config, connections: u64) -> Needs {
        Needs {
            shards: config.shard_count(),
            pin_cores: config.server.pin_cores,
            io_memory_bytes: config.server.io_memory_bytes as u64,
            connections,
            huge_pages: config.server.allocator_huge_pages,
        }
    }

    /// Locked memory the shards' buffer registrations are charged: `io_memory_bytes` with each
    /// of three rings per executor (shared/DECISIONS.md §5), never below glommio's floor.
    ///
    /// With `heap_huge_page_bytes` (the heap may sit on transparent huge pages) the kernel
    /// charges every huge page the buffer touches, whole: measured on Linux 6.18 as an
    /// unprivileged user, a shard pinned 6 MiB (3 x 2 MiB) with io_memory_bytes of 16 KiB,
    /// 128 KiB and 1 MiB, and with 2 MiB one shard did not fit 8 MiB; with
    /// MIMALLOC_ALLOW_THP=0 two shards pinned 768 KiB (tuning/results/2026-12-01-tuning.md).
    pub fn memlock_bytes(&self, heap_huge_page_bytes: Option<u64>) -> u64 {
        let per_ring = match heap_huge_page_bytes {
            None => self.io_memory_bytes.div_ceil(PAGE_BYTES) * PAGE_BYTES,
            Some(huge) if self.io_memory_bytes <= huge / 2 => huge,
            // A larger buffer may start part-way into a huge page and end in one more.
            Some(huge) => (self.io_memory_bytes.div_ceil(huge) + 1) * huge,
        };
        (per_ring * IO_URING_RINGS_PER_SHARD * self.shards as u64).max(GLOMMIO_MEMLOCK_BYTES_MIN)
    }

    /// Descriptors the broker holds: one per connection plus listeners, rings and files.
    pub fn descriptors(&self) -> u64 {
        self.connections + DESCRIPTORS_SPARE
    }
}

/// A resource limit; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit, which the kernel enforces.
    pub soft: Option<u64>,
    /// The hard limit, the most the process may raise the soft one to.
    pub hard: Option<u64>,
}

/// A network interface backed by a device (not `lo`, bridges or other virtual ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// `queues/rx-*` entries.
    pub rx_queues: usize,
    /// `queues/tx-*` entries.
    pub tx_queues: usize,
    /// Some `rx-*/rps_cpus` mask is non-zero.
    pub rps: bool,
}

/// The raw host values the rows judge. Every field is what was read, or `None`/empty when the
/// file does not exist or cannot be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// The sysctls in [`SYSCTLS`] that exist here, whitespace collapsed to single spaces.
    pub sysctls: BTreeMap<&'static str, String>,
    /// RLIMIT_MEMLOCK of this process.
    pub memlock: Option<Limit>,
    /// RLIMIT_NOFILE of this process.
    pub nofile: Option<Limit>,
    /// Effective capability mask (`CapEff` in `/proc/self/status`).
    pub capabilities: Option<u64>,
    /// Effective group and supplementary groups.
    pub groups: Vec<u32>,
    /// Seccomp mode (0 none, 1 strict, 2 filter).
    pub seccomp: Option<u32>,
    /// CPUs this process may run on (`Cpus_allowed_list`).
    pub cpus_allowed: Vec<usize>,
    /// Distinct cpufreq governors over all CPUs; empty without cpufreq.
    pub governors: Vec<String>,
    /// The current clocksource.
    pub clocksource: Option<String>,
    /// The selected transparent hugepage mode (`always`, `madvise`, `never`).
    pub transparent_hugepages: Option<String>,
    /// The PMD huge page size (`hpage_pmd_size`).
    pub huge_page_bytes: Option<u64>,
    /// `MIMALLOC_ALLOW_THP` in this process's environment, which wins over
    /// `server.allocator_huge_pages`: with huge pages allowed mimalloc (the broker's allocator)
    /// madvises its arenas for them.
    pub mimalloc_thp: Option<bool>,
    /// Active swap areas in `/proc/swaps`.
    pub swap_areas: usize,
    /// Device-backed network interfaces.
    pub nics: Vec<Nic>,
    /// An `irqbalance` process is running.
    pub irqbalance: bool,
}

/// The sysctls [`Host::read`] reads.
pub const SYSCTLS: &[&str] = &[
    "kernel.io_uring_disabled",
    "kernel.io_uring_group",
    "fs.file-max",
    "fs.nr_open",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.netdev_max_backlog",
    "net.netfilter.nf_conntrack_max",
    "vm.swappiness",
];

impl Host {
    /// Reads this host and this process.
    pub fn read() -> Host {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field =
            |name: &str| status.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':'));
        let mut groups: Vec<u32> = field("Gid")
            .and_then(|gids| gids.split_whitespace().nth(1)?.parse().ok())
            .into_iter()
            .collect();
        groups.extend(
            field("Groups").unwrap_or("").split_whitespace().filter_map(|g| g.parse::<u32>().ok()),
        );
        Host {
            kernel_release: read_value("/proc/sys/kernel/osrelease"),
            sysctls: SYSCTLS
                .iter()
                .filter_map(|name| {
                    Some((*name, read_value(format!("/proc/sys/{}", name.replace('.', "/")))?))
                })
                .collect(),
            memlock: rlimit(Resource::Memlock),
            nofile: rlimit(Resource::Nofile),
            capabilities: field("CapEff")
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok()),
            groups,
            seccomp: field("Seccomp").and_then(|mode| mode.trim().parse().ok()),
            cpus_allowed: field("Cpus_allowed_list").map(cpu_list).unwrap_or_default(),
            governors: governors(),
            clocksource: read_value(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            ),
            transparent_hugepages: read_value("/sys/kernel/mm/transparent_hugepage/enabled")
                .and_then(|modes| selected_mode(&modes)),
            huge_page_bytes: read_value("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
                .and_then(|size| size.parse().ok()),
            mimalloc_thp: std::env::var("MIMALLOC_ALLOW_THP").ok().map(|value| {
                !["0", "false", "off", "no"].contains(&value.to_ascii_lowercase().as_str())
            }),
            swap_areas: std::fs::read_to_string("/proc/swaps")
                .map(|swaps| swaps.lines().skip(1).filter(|l| !l.trim().is_empty()).count())
                .unwrap_or(0),
            nics: nics(),
            irqbalance: process_running("irqbalance"),
        }
    }
}

/// Judges `host` against what `needs` asks for, one row per setting, in the order of
/// tuning/README.md.
pub fn rows(host: &Host, needs: &Needs) -> Vec<Row> {
    let mut rows = Vec::with_capacity(SYSCTLS.len() + 12);
    rows.push(kernel(host));
    rows.push(io_uring(host));
    rows.push(seccomp(host));
    rows.push(memlock(host, needs));
    rows.extend(nofile(host, needs));
    let descriptors = needs.descriptors();
    rows.push(at_least(
        host,
        "fs.file-max",
        descriptors,
        "--connections + 1024; shared by all processes",
        HINT_FILE_MAX,
    ));
    rows.push(at_least(
        host,
        "fs.nr_open",
        descriptors,
        "--connections + 1024; caps the hard RLIMIT_NOFILE",
        HINT_NR_OPEN,
    ));
    rows.push(at_least(
        host,
        "net.core.somaxconn",
        LISTEN_BACKLOG,
        "glommio listens with backlog 1024 per shard",
        HINT_SOMAXCONN,
    ));
    rows.push(at_least(
        host,
        "net.ipv4.tcp_max_syn_backlog",
        SYN_BACKLOG_MIN,
        "EMQX; reconnect storms",
        HINT_SYN_BACKLOG,
    ));
    rows.push(port_range(host));
    rows.push(tw_reuse(host));
    rows.push(at_most(
        host,
        "net.ipv4.tcp_fin_timeout",
        FIN_TIMEOUT_S_MAX,
        "EMQX",
        HINT_FIN_TIMEOUT,
    ));
    for name in ["net.core.rmem_max", "net.core.wmem_max"] {
        rows.push(unused_by_isthmus(host, name));
    }
    for name in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"] {
        rows.push(tcp_buffers(host, name));
    }
    rows.push(at_least(
        host,
        "net.core.netdev_max_backlog",
        NETDEV_BACKLOG_MIN,
        "EMQX",
        HINT_NETDEV_BACKLOG,
    ));
    rows.push(conntrack(host, needs));
    rows.push(transparent_hugepages(host));
    rows.push(swappiness(host));
    rows.push(cpus(host, needs));
    rows.push(pinning(host, needs));
    rows.push(governor(host));
    rows.push(clocksource(host));
    rows.extend(nic_queues(host, needs));
    rows.push(irqbalance(host));
    rows
}

/// The report as printed: a line saying what the rows were sized for, then one line per row in
/// aligned columns (separated by at least two spaces) and, under each WARN row, its hint.
pub fn render(rows: &[Row], needs: &Needs) -> String {
    let mut out = String::new();
    let pin = if needs.pin_cores { "on" } else { "off" };
    let _ = writeln!(
        out,
        "isthmus doctor: {} shards, pin_cores {pin}, io_memory_bytes {}, sized for {} \
         connections; advice only, see tuning/README.md",
        needs.shards, needs.io_memory_bytes, needs.connections
    );
    let header = Row {
        setting: "SETTING".into(),
        current: "CURRENT".into(),
        recommended: "RECOMMENDED".into(),
        status: Status::Ok,
        hint: "",
    };
    let width =
        |column: fn(&Row) -> usize| rows.iter().chain([&header]).map(column).max().unwrap_or(0) + 2;
    let setting_width = width(|row| row.setting.len());
    let current_width = width(|row| row.current.len());
    let _ = writeln!(
        out,
        "{:<8}{:<setting_width$}{:<current_width$}{}",
        "STATUS", header.setting, header.current, header.recommended
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<8}{:<setting_width$}{:<current_width$}{}",
            row.status.label(),
            row.setting,
            row.current,
            row.recommended
        );
        if row.status == Status::Warn && !row.hint.is_empty() {
            let _ = writeln!(out, "        fix: {}", row.hint);
        }
    }
    out
}

/// Reads the host, prints the report for `config` to stdout, and says whether any row warned.
pub fn run(config: &Config, connections: u64) -> bool {
    let needs = Needs::new(config, connections);
    let rows = rows(&Host::read(), &needs);
    print!("{}", render(&rows, &needs));
    rows.iter().any(|row| row.status == Status::Warn)
}

/// glommio refuses to build an executor below this RLIMIT_MEMLOCK (`sys/uring.rs`,
/// `MIN_MEMLOCK_LIMIT`), whatever `io_memory` is.
const GLOMMIO_MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

/// Rings per glommio executor that register `io_memory` (main, poll, latency).
const IO_URING_RINGS_PER_SHARD: u64 = 3;

/// The base page size the kernel pins registered buffers in.
const PAGE_BYTES: u64 = 4096;

/// Descriptors beyond one per connection: listeners, io_uring rings, eventfds, storage files.
const DESCRIPTORS_SPARE: u64 = 1024;

/// glommio 0.9's `TcpListener::bind` calls `listen(1024)`; the kernel takes the smaller of that
/// and `somaxconn`, so more than 1024 changes nothing for Isthmus.
const LISTEN_BACKLOG: u64 = 1024;

/// EMQX's tuning guide value for half-open connections.
const SYN_BACKLOG_MIN: u64 = 16384;

/// Local ports a connecting host should have: EMQX's `1024 65535` is 64,512.
const LOCAL_PORTS_MIN: u64 = 60_000;

/// EMQX's `tcp_fin_timeout`.
const FIN_TIMEOUT_S_MAX: u64 = 15;

/// Smallest `tcp_rmem`/`tcp_wmem` maximum: the kernel's own `tcp_wmem` default, which holds
/// the bandwidth-delay product of 10 Gbit/s at 3 ms. EMQX sets 16 MiB, for longer links.
const SOCKET_BUFFER_BYTES_MAX_MIN: u64 = 4 * 1024 * 1024;

/// EMQX's `netdev_max_backlog`.
const NETDEV_BACKLOG_MIN: u64 = 16384;

/// Conntrack entries per connection: during a reconnect storm the old connection's entry
/// lingers (TIME_WAIT) beside the new one's.
const CONNTRACK_ENTRIES_PER_CONNECTION: u64 = 2;

const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;

const HINT_KERNEL: &str = "glommio needs io_uring features of Linux 5.8; upgrade the kernel";
const HINT_IO_URING: &str = "sysctl -w kernel.io_uring_disabled=0, or 1 with the service user \
     in the group kernel.io_uring_group";
const HINT_SECCOMP: &str = "a seccomp filter is active (container runtime or systemd \
     SystemCallFilter=); make sure it allows io_uring_setup, io_uring_enter and \
     io_uring_register";
const HINT_MEMLOCK: &str = "LimitMEMLOCK=infinity or AmbientCapabilities=CAP_IPC_LOCK (systemd); \
     or server.allocator_huge_pages = false (the default; MIMALLOC_ALLOW_THP=0 in the environment \
     also works), so that buffers are charged by the 4 KiB page; the charge is per user, over all its processes";
const HINT_NOFILE: &str = "LimitNOFILE= (systemd) or `ulimit -n` / limits.conf nofile";
const HINT_FILE_MAX: &str = "sysctl -w fs.file-max=N (in /etc/sysctl.d/)";
const HINT_NR_OPEN: &str = "sysctl -w fs.nr_open=N before raising the hard RLIMIT_NOFILE";
const HINT_SOMAXCONN: &str = "sysctl -w net.core.somaxconn=1024 or more";
const HINT_SYN_BACKLOG: &str = "sysctl -w net.ipv4.tcp_max_syn_backlog=16384";
const HINT_PORT_RANGE: &str = "on hosts that open many connections (loadtest, bridges): \
     sysctl -w net.ipv4.ip_local_port_range='1024 65535', or spread over several source \
     addresses";
const HINT_TW_REUSE: &str = "sysctl -w net.ipv4.tcp_tw_reuse=2 (loopback) or 1 (not behind NAT)";
const HINT_FIN_TIMEOUT: &str = "sysctl -w net.ipv4.tcp_fin_timeout=15";
const HINT_TCP_BUFFERS: &str = "sysctl -w net.ipv4.tcp_rmem='4096 131072 6291456' (and tcp_wmem); \
     16777216 (EMQX) for NATS links with long round trips";
const HINT_NETDEV_BACKLOG: &str = "sysctl -w net.core.netdev_max_backlog=16384";
const HINT_CONNTRACK: &str = "sysctl -w net.netfilter.nf_conntrack_max=N, or no conntrack rules \
     on the broker's ports";
const HINT_THP: &str = "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled";
const HINT_SWAP: &str = "sysctl -w vm.swappiness=1, or swapoff -a";
const HINT_CPUS: &str = "server.shards at most the CPUs this process may use";
const HINT_PINNING: &str = "pin_cores puts shard i on CPU i mod N: run with CPUs 0..N-1 allowed, \
     at most one shard per CPU, or set server.pin_cores = false";
const HINT_GOVERNOR: &str = "cpupower frequency-set -g performance";
const HINT_CLOCKSOURCE: &str = "use a clocksource read in user space (tsc; kvm-clock on KVM \
     guests): echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource";
const HINT_NIC: &str = "ethtool -L IF combined N (RSS queues = shards), or spread rx-*/rps_cpus \
     over the shard cores";
const HINT_IRQBALANCE: &str = "when placing NIC IRQs by hand, stop irqbalance or ban the shard \
     cores (IRQBALANCE_BANNED_CPULIST)";

fn kernel(host: &Host) -> Row {
    let release = host.kernel_release.clone();
    let version = release.as_deref().and_then(kernel_version);
    let status = match version {
        Some(version) if version >= (5, 8) => Status::Ok,
        _ => Status::Warn,
    };
    row(
        "kernel",
        release.unwrap_or_else(|| "unknown".into()),
        ">= 5.8 (glommio)",
        status,
        HINT_KERNEL,
    )
}

fn io_uring(host: &Host) -> Row {
    let setting = "kernel.io_uring_disabled";
    let Some(disabled) = host.sysctls.get(setting) else {
        return row(setting, "absent (kernel before 6.6: io_uring on)".into(), "0", Status::Ok, "");
    };
    let group = host.sysctls.get("kernel.io_uring_group").cloned().unwrap_or_else(|| "-1".into());
    let admin = has_capability(host, CAP_SYS_ADMIN);
    let member = group.parse::<u32>().is_ok_and(|gid| host.groups.contains(&gid));
    // The kernel's rule (io_uring_allowed): 0 allows everyone, 2 no one, 1 CAP_SYS_ADMIN and
    // members of io_uring_group.
    let (current, status) = match disabled.as_str() {
        "0" => ("0".to_string(), Status::Ok),
        "1" if admin => (format!("1, io_uring_group {group}, allowed: CAP_SYS_ADMIN"), Status::Ok),
        "1" if member => (format!("1, io_uring_group {group}, allowed: member"), Status::Ok),
        "1" => (format!("1, io_uring_group {group}, refused: not a member"), Status::Warn),
        other => (format!("{other} (Isthmus refuses to start)"), Status::Warn),
    };
    row(setting, current, "0, or 1 with the user in io_uring_group", status, HINT_IO_URING)
}

fn seccomp(host: &Host) -> Row {
    let (current, status) = match host.seccomp {
        None => ("unknown".to_string(), Status::Absent),
        Some(0) => ("0 (none)".to_string(), Status::Ok),
        Some(mode) => (format!("{mode} (filter active)"), Status::Warn),
    };
    row(
        "seccomp (this process)",
        current,
        "0, or a filter that allows io_uring",
        status,
        HINT_SECCOMP,
    )
}

fn memlock(host: &Host, needs: &Needs) -> Row {
    let huge = heap_huge_page_bytes(host, needs);
    let needed = needs.memlock_bytes(huge);
    let per_ring =
        if huge.is_some() { "io_memory_bytes in whole huge pages" } else { "io_memory_bytes" };
    let recommended = format!(
        ">= {}: {} shards x 3 rings x {per_ring}; or CAP_IPC_LOCK",
        size(needed),
        needs.shards
    );
    let Some(limit) = host.memlock else {
        return row("RLIMIT_MEMLOCK", "unknown".into(), recommended, Status::Warn, HINT_MEMLOCK);
    };
    let soft = limit.soft.unwrap_or(u64::MAX);
    let mut current = format!("soft {} / hard {}", limit_text(limit.soft), limit_text(limit.hard));
    let status = if soft < GLOMMIO_MEMLOCK_BYTES_MIN {
        current.push_str(", below glommio's 512 KiB: shards cannot start");
        Status::Warn
    } else if has_capability(host, CAP_IPC_LOCK) {
        current.push_str(", CAP_IPC_LOCK: not charged");
        Status::Ok
    } else if soft >= needed {
        Status::Ok
    } else {
        current.push_str(", registration falls back (sockets unaffected)");
        Status::Warn
    };
    row("RLIMIT_MEMLOCK", current, recommended, status, HINT_MEMLOCK)
}

/// The huge page size when the broker's heap, and so its io_memory buffers, may sit on
/// transparent huge pages: THP not `never`, and mimalloc allowed to ask for them (the
/// environment, else the config).
fn heap_huge_page_bytes(host: &Host, needs: &Needs) -> Option<u64> {
    let thp = host.transparent_hugepages.as_deref().is_some_and(|mode| mode != "never");
    if thp && host.mimalloc_thp.unwrap_or(needs.huge_pages) {
        host.huge_page_bytes
    } else {
        None
    }
}

fn nofile(host: &Host, needs: &Needs) -> [Row; 2] {
    let needed = needs.descriptors();
    let recommended = format!(">= {needed} (--connections + 1024)");
    let (soft, hard) = match host.nofile {
        Some(limit) => (limit.soft, limit.hard),
        None => (Some(0), Some(0)),
    };
    let judge = |value: Option<u64>| {
        let status = if value.is_none_or(|v| v >= needed) { Status::Ok } else { Status::Warn };
        (limit_text(value), status)
    };
    let (soft_text, soft_status) = judge(soft);
    let (hard_text, hard_status) = judge(hard);
    [
        row("RLIMIT_NOFILE (soft)", soft_text, recommended.clone(), soft_status, HINT_NOFILE),
        row("RLIMIT_NOFILE (hard)", hard_text, recommended, hard_status, HINT_NOFILE),
    ]
}

fn port_range(host: &Host) -> Row {
    let setting = "net.ipv4.ip_local_port_range";
    let Some(range) = host.sysctls.get(setting) else {
        return absent(setting, "1024 65535 where connections are opened");
    };
    let mut bounds = range.split(' ').filter_map(|n| n.parse::<u64>().ok());
    let ports = match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) if high >= low => high - low + 1,
        _ => 0,
    };
    let status = if ports >= LOCAL_PORTS_MIN { Status::Ok } else { Status::Warn };
    row(
        setting,
        format!("{range} ({ports} ports)"),
        "1024 65535 on hosts that connect out (loadtest)",
        status,
        HINT_PORT_RANGE,
    )
}

fn tw_reuse(host: &Host) -> Row {
    let setting = "net.ipv4.tcp_tw_reuse";
    let Some(value) = host.sysctls.get(setting) else { return absent(setting, "1 or 2") };
    let status = if value == "1" || value == "2" { Status::Ok } else { Status::Warn };
    row(
        setting,
        value.clone(),
        "2 (loopback only, default) or 1; not behind NAT",
        status,
        HINT_TW_REUSE,
    )
}

fn tcp_buffers(host: &Host, name: &'static str) -> Row {
    let recommended = "min default max, max >= 4194304; 16777216 (EMQX) for long round trips";
    let Some(value) = host.sysctls.get(name) else { return absent(name, recommended) };
    let max = value.split(' ').nth(2).and_then(|max| max.parse::<u64>().ok()).unwrap_or(0);
    let status = if max >= SOCKET_BUFFER_BYTES_MAX_MIN { Status::Ok } else { Status::Warn };
    row(name, value.clone(), recommended, status, HINT_TCP_BUFFERS)
}

/// A row shown for completeness: Isthmus sets no SO_RCVBUF/SO_SNDBUF, so these caps do not
/// apply to its sockets (kernel autotuning is bounded by `tcp_rmem`/`tcp_wmem` instead).
fn unused_by_isthmus(host: &Host, name: &'static str) -> Row {
    let recommended = "any: caps SO_RCVBUF/SO_SNDBUF, which Isthmus does not set (EMQX: 16777216)";
    let Some(value) = host.sysctls.get(name) else { return absent(name, recommended) };
    row(name, value.clone(), recommended, Status::Ok, "")
}

fn conntrack(host: &Host, needs: &Needs) -> Row {
    let setting = "net.netfilter.nf_conntrack_max";
    let needed = needs.connections * CONNTRACK_ENTRIES_PER_CONNECTION;
    let recommended = format!(">= {needed} (2 x --connections) if conntrack is loaded");
    let Some(value) = host.sysctls.get(setting) else {
        return row(
            setting,
            "absent (conntrack not loaded)".into(),
            recommended,
            Status::Absent,
            "",
        );
    };
    let status =
        if value.parse::<u64>().is_ok_and(|v| v >= needed) { Status::Ok } else { Status::Warn };
    row(setting, value.clone(), recommended, status, HINT_CONNTRACK)
}

fn transparent_hugepages(host: &Host) -> Row {
    let setting = "transparent_hugepage/enabled";
    let Some(mode) = &host.transparent_hugepages else {
        return absent(setting, "madvise or never");
    };
    let status = if mode == "always" { Status::Warn } else { Status::Ok };
    row(setting, mode.clone(), "madvise or never", status, HINT_THP)
}

fn swappiness(host: &Host) -> Row {
    let setting = "vm.swappiness";
    let value = host.sysctls.get(setting).cloned().unwrap_or_else(|| "unknown".into());
    let (current, status) = if host.swap_areas == 0 {
        (format!("{value}, no swap active"), Status::Ok)
    } else if value.parse::<u64>().is_ok_and(|v| v <= 1) {
        (format!("{value}, {} swap areas", host.swap_areas), Status::Ok)
    } else {
        (format!("{value}, {} swap areas", host.swap_areas), Status::Warn)
    };
    row(setting, current, "1, or no swap", status, HINT_SWAP)
}

fn cpus(host: &Host, needs: &Needs) -> Row {
    let allowed = host.cpus_allowed.len();
    let status = if needs.shards <= allowed { Status::Ok } else { Status::Warn };
    row(
        "CPUs vs shards",
        format!(
            "{allowed} CPUs allowed ({}), {} shards",
            cpu_list_text(&host.cpus_allowed),
            needs.shards
        ),
        "shards <= CPUs; spare cores for IRQs and load when there are many",
        status,
        HINT_CPUS,
    )
}

fn pinning(host: &Host, needs: &Needs) -> Row {
    let setting = "server.pin_cores";
    if !needs.pin_cores {
        return row(setting, "off".into(), "on, one shard per allowed CPU", Status::Ok, "");
    }
    let allowed = &host.cpus_allowed;
    // serve pins shard i to CPU id i mod (allowed count), so the ids must be 0..N-1.
    let ids_from_zero = allowed.iter().enumerate().all(|(i, cpu)| i == *cpu);
    let status = if ids_from_zero && needs.shards <= allowed.len().max(1) {
        Status::Ok
    } else {
        Status::Warn
    };
    let current = format!("on, shard i -> CPU i mod {}", allowed.len());
    row(setting, current, "on, one shard per allowed CPU", status, HINT_PINNING)
}

fn governor(host: &Host) -> Row {
    let setting = "cpufreq governor";
    if host.governors.is_empty() {
        return row(
            setting,
            "absent (no cpufreq, e.g. a VM)".into(),
            "performance",
            Status::Absent,
            "",
        );
    }
    let status =
        if host.governors.iter().all(|g| g == "performance") { Status::Ok } else { Status::Warn };
    row(setting, host.governors.join(", "), "performance", status, HINT_GOVERNOR)
}

fn clocksource(host: &Host) -> Row {
    let setting = "clocksource";
    let Some(source) = &host.clocksource else { return absent(setting, "tsc") };
    // These are read through the vDSO without a system call; hpet and acpi_pm are not.
    let fast = ["tsc", "kvm-clock", "arch_sys_counter"].contains(&source.as_str());
    let status = if fast { Status::Ok } else { Status::Warn };
    row(setting, source.clone(), "tsc (kvm-clock on KVM guests)", status, HINT_CLOCKSOURCE)
}

fn nic_queues(host: &Host, needs: &Needs) -> Vec<Row> {
    let recommended = format!("rx queues >= {} shards, or RPS over the shard cores", needs.shards);
    if host.nics.is_empty() {
        return vec![row(
            "NIC queues",
            "no device-backed NIC (loopback only)".into(),
            recommended,
            Status::Absent,
            "",
        )];
    }
    host.nics
        .iter()
        .map(|nic| {
            let rps = if nic.rps { "on" } else { "off" };
            let status =
                if nic.rx_queues >= needs.shards || nic.rps { Status::Ok } else { Status::Warn };
            Row {
                setting: format!("NIC {} queues", nic.name),
                current: format!("rx {}, tx {}, RPS {rps}", nic.rx_queues, nic.tx_queues),
                recommended: recommended.clone(),
                status,
                hint: HINT_NIC,
            }
        })
        .collect()
}

fn irqbalance(host: &Host) -> Row {
    let (current, status) =
        if host.irqbalance { ("running", Status::Warn) } else { ("not running", Status::Ok) };
    row("irqbalance", current.into(), "off, or shard cores banned", status, HINT_IRQBALANCE)
}

/// A row for a value that must be at least `needed`.
fn at_least(host: &Host, name: &'static str, needed: u64, why: &str, hint: &'static str) -> Row {
    let Some(value) = host.sysctls.get(name) else { return absent(name, &format!(">= {needed}")) };
    let status =
        if value.parse::<u64>().is_ok_and(|v| v >= needed) { Status::Ok } else { Status::Warn };
    row(name, value.clone(), format!(">= {needed} ({why})"), status, hint)
}

/// A row for a value that must be at most `limit`.
fn at_most(host: &Host, name: &'static str, limit: u64, why: &str, hint: &'static str) -> Row {
    let Some(value) = host.sysctls.get(name) else { return absent(name, &format!("<= {limit}")) };
    let status =
        if value.parse::<u64>().is_ok_and(|v| v <= limit) { Status::Ok } else { Status::Warn };
    row(name, value.clone(), format!("<= {limit} ({why})"), status, hint)
}

fn absent(name: &str, recommended: &str) -> Row {
    row(name, "absent".into(), recommended, Status::Absent, "")
}

fn row(
    setting: &str,
    current: String,
    recommended: impl Into<String>,
    status: Status,
    hint: &'static str,
) -> Row {
    Row { setting: setting.into(), current, recommended: recommended.into(), status, hint }
}

fn has_capability(host: &Host, capability: u32) -> bool {
    host.capabilities.is_some_and(|mask| mask & (1 << capability) != 0)
}

/// (major, minor) of a release such as `6.18.44-fc-v657`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `0-3,8,10-11` as CPU ids.
fn cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(low), Ok(high)) = (low.parse::<usize>(), high.parse::<usize>()) {
            cpus.extend(low..=high);
        }
    }
    cpus
}

fn cpu_list_text(cpus: &[usize]) -> String {
    match (cpus.first(), cpus.last()) {
        (Some(first), Some(last)) if last - first + 1 == cpus.len() => format!("{first}-{last}"),
        _ => cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
    }
}

/// The bracketed entry of a sysfs mode list such as `always [madvise] never`.
fn selected_mode(modes: &str) -> Option<String> {
    let start = modes.find('[')? + 1;
    let end = modes[start..].find(']')? + start;
    Some(modes[start..end].to_string())
}

fn limit_text(value: Option<u64>) -> String {
    value.map_or_else(|| "unlimited".into(), |v| v.to_string())
}

/// `8388608 (8 MiB)`.
fn size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes % (MIB / 4) == 0 {
        format!("{bytes} ({} MiB)", bytes as f64 / MIB as f64)
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{bytes} ({} KiB)", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// A file's contents with whitespace runs collapsed to one space; `None` if unreadable.
fn read_value(path: impl AsRef<Path>) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn governors() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") else { return Vec::new() };
    let mut governors: Vec<String> = entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| read_value(entry.path().join("cpufreq/scaling_governor")))
        .collect();
    governors.sort_unstable();
    governors.dedup();
    governors
}

fn nics() -> Vec<Nic> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else { return Vec::new() };
    let mut nics: Vec<Nic> = entries
        .flatten()
        // Only device-backed interfaces have a `device` link; lo, bridges, veth and ifb do not.
        .filter(|entry| entry.path().join("device").exists())
        .map(|entry| {
            let queues = entry.path().join("queues");
            let names: Vec<String> = std::fs::read_dir(&queues)
                .map(|q| {
                    q.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
                })
                .unwrap_or_default();
            let rps = names.iter().filter(|n| n.starts_with("rx-")).any(|n| {
                read_value(queues.join(n).join("rps_cpus"))
                    .is_some_and(|mask| mask.bytes().any(|b| b.is_ascii_hexdigit() && b != b'0'))
            });
            Nic {
                name: entry.file_name().to_string_lossy().into_owned(),
                rx_queues: names.iter().filter(|n| n.starts_with("rx-")).count(),
                tx_queues: names.iter().filter(|n| n.starts_with("tx-")).count(),
                rps,
            }
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

fn process_running(command: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .any(|entry| read_value(entry.path().join("comm")).is_some_and(|comm| comm == command))
}

#[derive(Clone, Copy)]
enum Resource {
    Memlock,
    Nofile,
}

// getrlimit is a libc call, so unsafe; it is the one call here that is.
#[allow(unsafe_code)]
fn rlimit(resource: Resource) -> Option<Limit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let resource = match resource {
        Resource::Memlock => libc::RLIMIT_MEMLOCK,
        Resource::Nofile => libc::RLIMIT_NOFILE,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which points at a local we own
    // for the length of the call; it touches nothing else.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return None;
    }
    // rlim_t is 32 bits on some 32-bit targets, so the cast is not always to the same type.
    #[allow(clippy::unnecessary_cast)]
    let finite = |value: libc::rlim_t| (value != libc::RLIM_INFINITY).then_some(value as u64);
    Some(Limit { soft: finite(limit.rlim_cur), hard: finite(limit.rlim_max) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs() -> Needs {
        Needs {
            shards: 2,
            pin_cores: true,
            io_memory_bytes: 128 * 1024,
            connections: 100_000,
            huge_pages: false,
        }
    }

    /// A host that follows every recommendation.
    fn tuned() -> Host {
        let sysctls = [
            ("kernel.io_uring_disabled", "0"),
            ("kernel.io_uring_group", "-1"),
            ("fs.file-max", "2097152"),
            ("fs.nr_open", "2097152"),
            ("net.core.somaxconn", "32768"),
            ("net.ipv4.tcp_max_syn_backlog", "16384"),
            ("net.ipv4.ip_local_port_range", "1024 65535"),
            ("net.ipv4.tcp_tw_reuse", "2"),
            ("net.ipv4.tcp_fin_timeout", "15"),
            ("net.core.rmem_max", "16777216"),
            ("net.core.wmem_max", "16777216"),
            ("net.ipv4.tcp_rmem", "1024 4096 16777216"),
            ("net.ipv4.tcp_wmem", "1024 4096 16777216"),
            ("net.core.netdev_max_backlog", "16384"),
            ("net.netfilter.nf_conntrack_max", "1000000"),
            ("vm.swappiness", "1"),
        ];
        Host {
            kernel_release: Some("6.1.0-18-amd64".into()),
            sysctls: sysctls.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
            memlock: Some(Limit { soft: Some(8 << 20), hard: Some(8 << 20) }),
            nofile: Some(Limit { soft: Some(1 << 20), hard: Some(1 << 20) }),
            capabilities: Some(0),
            groups: vec![1000],
            seccomp: Some(0),
            cpus_allowed: vec![0, 1],
            governors: vec!["performance".into()],
            clocksource: Some("tsc".into()),
            transparent_hugepages: Some("madvise".into()),
            huge_page_bytes: Some(2 << 20),
            mimalloc_thp: None,
            swap_areas: 0,
            nics: vec![Nic { name: "eth0".into(), rx_queues: 2, tx_queues: 2, rps: false }],
            irqbalance: false,
        }
    }

    fn status(rows: &[Row], setting: &str) -> Status {
        rows.iter().find(|r| r.setting == setting).unwrap_or_else(|| panic!("{setting}")).status
    }

    #[test]
    fn a_tuned_host_has_no_warnings() {
        let rows = rows(&tuned(), &needs());
        let warned: Vec<_> = rows.iter().filter(|r| r.status != Status::Ok).collect();
        assert!(warned.is_empty(), "{warned:#?}");
    }

    #[test]
    fn every_setting_out_of_range_warns() {
        let mut host = tuned();
        for (key, value) in [
            ("fs.file-max", "50000"),
            ("net.core.somaxconn", "128"),
            ("net.ipv4.ip_local_port_range", "32768 60999"),
            ("net.ipv4.tcp_tw_reuse", "0"),
            ("net.ipv4.tcp_fin_timeout", "60"),
            ("net.ipv4.tcp_rmem", "4096 131072 2097152"),
            ("vm.swappiness", "60"),
        ] {
            host.sysctls.insert(key, value.into());
        }
        host.kernel_release = Some("5.4.0".into());
        host.nofile = Some(Limit { soft: Some(1024), hard: Some(524288) });
        host.transparent_hugepages = Some("always".into());
        host.swap_areas = 1;
        host.clocksource = Some("hpet".into());
        host.governors = vec!["performance".into(), "powersave".into()];
        host.nics[0].rx_queues = 1;
        host.irqbalance = true;
        let rows = rows(&host, &needs());
        for setting in [
            "kernel",
            "fs.file-max",
            "net.core.somaxconn",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_rmem",
            "vm.swappiness",
            "RLIMIT_NOFILE (soft)",
            "transparent_hugepage/enabled",
            "clocksource",
            "cpufreq governor",
            "NIC eth0 queues",
            "irqbalance",
        ] {
            assert_eq!(status(&rows, setting), Status::Warn, "{setting}");
        }
        assert_eq!(status(&rows, "RLIMIT_NOFILE (hard)"), Status::Ok);
    }

    #[test]
    fn io_uring_disabled_follows_the_kernel_rule() {
        let mut host = tuned();
        host.sysctls.insert("kernel.io_uring_disabled", "1".into());
        assert_eq!(status(&rows(&host, &needs()), "kernel.io_uring_disabled"), Status::Warn);
        host.sysctls.insert("kernel.io_uring_group", "1000".into());
        assert_eq!(status(&rows(&host, &needs()), "kernel.io_uring_disabled"), Status::Ok);
        host.sysctls.insert("kernel.io_uring_group", "-1".into());
        host.capabilities = Some(1 << CAP_SYS_ADMIN);
        assert_eq!(status(&rows(&host, &needs()), "kernel.io_uring_disabled"), Status::Ok);
        host.sysctls.insert("kernel.io_uring_disabled", "2".into());
        assert_eq!(status(&rows(&host, &needs()), "kernel.io_uring_disabled"), Status::Warn);
        host.sysctls.remove("kernel.io_uring_disabled");
        assert_eq!(status(&rows(&host, &needs()), "kernel.io_uring_disabled"), Status::Ok);
    }

    #[test]
    fn memlock_is_sized_by_shards_and_io_memory() {
        let mut host = tuned();
        let mut needs = needs();
        // 2 shards x 3 rings x 128 KiB = 768 KiB fits 8 MiB.
        assert_eq!(needs.memlock_bytes(None), 768 * 1024);
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Ok);
        // On huge pages each ring is charged a whole 2 MiB page: 12 MiB does not fit.
        host.mimalloc_thp = Some(true);
        assert_eq!(needs.memlock_bytes(Some(2 << 20)), 12 << 20);
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Warn);
        needs.shards = 1;
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Ok);
        // A 2 MiB buffer touches two huge pages: 1 shard needs 12 MiB.
        needs.io_memory_bytes = 2 << 20;
        assert_eq!(needs.memlock_bytes(Some(2 << 20)), 12 << 20);
        host.transparent_hugepages = Some("never".into());
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Ok);
        host.mimalloc_thp = None;
        host.transparent_hugepages = Some("madvise".into());
        // The config's allocator_huge_pages counts when the environment is silent.
        needs.huge_pages = true;
        needs.shards = 2;
        needs.io_memory_bytes = 128 * 1024;
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Warn);
        host.mimalloc_thp = Some(false);
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Ok);
        host.mimalloc_thp = None;
        needs.huge_pages = false;
        needs.shards = 2;
        needs.io_memory_bytes = 10 << 20;
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Warn);
        host.capabilities = Some(1 << CAP_IPC_LOCK);
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Ok);
        // Below glommio's floor nothing helps.
        host.memlock = Some(Limit { soft: Some(64 * 1024), hard: Some(64 * 1024) });
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Warn);
        host.memlock = Some(Limit { soft: None, hard: None });
        host.capabilities = Some(0);
        assert_eq!(status(&rows(&host, &needs), "RLIMIT_MEMLOCK"), Status::Ok);
    }

    #[test]
    fn shards_beyond_cpus_or_pinning_outside_0_to_n_warn() {
        let mut host = tuned();
        let mut needs = needs();
        needs.shards = 3;
        let rows3 = rows(&host, &needs);
        assert_eq!(status(&rows3, "CPUs vs shards"), Status::Warn);
        assert_eq!(status(&rows3, "server.pin_cores"), Status::Warn);
        needs.shards = 2;
        host.cpus_allowed = vec![2, 3];
        assert_eq!(status(&rows(&host, &needs), "server.pin_cores"), Status::Warn);
        needs.pin_cores = false;
        assert_eq!(status(&rows(&host, &needs), "server.pin_cores"), Status::Ok);
    }

    #[test]
    fn absent_settings_are_neither_ok_nor_warn() {
        let mut host = tuned();
        host.governors.clear();
        host.nics.clear();
        host.sysctls.remove("net.netfilter.nf_conntrack_max");
        let rows = rows(&host, &needs());
        assert_eq!(status(&rows, "cpufreq governor"), Status::Absent);
        assert_eq!(status(&rows, "NIC queues"), Status::Absent);
        assert_eq!(status(&rows, "net.netfilter.nf_conntrack_max"), Status::Absent);
    }

    #[test]
    fn rps_stands_in_for_missing_queues() {
        let mut host = tuned();
        host.nics[0] = Nic { name: "eth0".into(), rx_queues: 1, tx_queues: 1, rps: true };
        assert_eq!(status(&rows(&host, &needs()), "NIC eth0 queues"), Status::Ok);
    }

    #[test]
    fn parsers() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("5.8"), Some((5, 8)));
        assert_eq!(kernel_version("x"), None);
        assert_eq!(cpu_list("0-2,5,7-8\n"), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(cpu_list_text(&[0, 1, 2]), "0-2");
        assert_eq!(cpu_list_text(&[0, 2]), "0,2");
        assert_eq!(selected_mode("always [madvise] never").as_deref(), Some("madvise"));
        assert_eq!(size(8 << 20), "8388608 (8 MiB)");
        assert_eq!(size(768 * 1024), "786432 (768 KiB)");
    }

    #[test]
    fn render_aligns_columns_and_hints_warnings() {
        let needs = needs();
        let rows = vec![
            row("a", "1".into(), ">= 2", Status::Warn, "raise a"),
            row("long setting", "22 33".into(), ">= 1", Status::Ok, "unused"),
        ];
        let text = render(&rows, &needs);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("isthmus doctor: 2 shards"), "{text}");
        assert!(lines[1].starts_with("STATUS"), "{text}");
        let columns = |line: &str| -> Vec<String> {
            line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()
        };
        assert_eq!(columns(lines[2]), ["WARN", "a", "1", ">= 2"]);
        assert_eq!(lines[3], "        fix: raise a");
        assert_eq!(columns(lines[4]), ["OK", "long setting", "22 33", ">= 1"]);
        assert_eq!(lines.len(), 5, "no hint under OK rows: {text}");
    }
}
