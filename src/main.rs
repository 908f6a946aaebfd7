//! The `isthmus` command: parse flags, load the config, hand over to `serve`.

use clap::{Parser, Subcommand};
use isthmus::config::{Config, DEFAULT_TOML};
use std::net::SocketAddr;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "isthmus",
    version = isthmus::VERSION,
    about = "A thread-per-core NATS and MQTT broker on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve {
        /// TOML configuration file; every key is optional.
        #[arg(long)]
        config: Option<PathBuf>,
        /// NATS listen address (overrides nats.listen); port 0 picks a free port.
        #[arg(long)]
        nats_listen: Option<SocketAddr>,
        /// MQTT listen address (overrides mqtt.listen); port 0 picks a free port.
        #[arg(long)]
        mqtt_listen: Option<SocketAddr>,
        /// Number of shards (overrides server.shards); 0 = one per core.
        #[arg(long)]
        shards: Option<usize>,
        /// Log filter, e.g. info or isthmus=debug (RUST_LOG also works).
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// Check this host's settings against tuning/README.md (advice: exits 0 unless --strict).
    Doctor {
        /// TOML configuration file, for the shard count, pinning and io memory.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Number of shards (overrides server.shards); 0 = one per core.
        #[arg(long)]
        shards: Option<usize>,
        /// Concurrent client connections to size descriptor and conntrack limits for.
        #[arg(long, default_value_t = 100_000)]
        connections: u64,
        /// Exit with status 1 when any row warns.
        #[arg(long)]
        strict: bool,
    },
    /// Make keys and tokens, inspect a token, or dry-run the broker's token check (offline).
    Token {
        #[command(subcommand)]
        command: isthmus::auth::cli::TokenCommand,
    },
    /// Print configuration.
    Config {
        /// Print the default configuration file with every key explained.
        #[arg(long)]
        default: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, nats_listen, mqtt_listen, shards, log } => {
            let filter = std::env::var("RUST_LOG").unwrap_or(log);
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .init();
            load(config, nats_listen, mqtt_listen, shards).and_then(|config| {
                configure_allocator(&config);
                isthmus::serve::set_release_memory(release_memory);
                isthmus::serve::run(config)
            })
        }
        Command::Doctor { config, shards, connections, strict } => load(config, None, None, shards)
            .map(|config| {
                if isthmus::doctor::run(&config, connections) && strict {
                    std::process::exit(1);
                }
            }),
        Command::Token { command } => isthmus::auth::cli::run(command).map(|accepted| {
            if !accepted {
                std::process::exit(1);
            }
        }),
        Command::Config { default: _ } => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
    };
    if let Err(error) = result {
        eprintln!("isthmus: {error}");
        std::process::exit(1);
    }
}

/// Indices of mimalloc options in `mi_option_t` (mimalloc v3, include/mimalloc.h); the
/// allocator test in tests/cli.rs checks them against what MIMALLOC_VERBOSE prints.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Applies the `[server]` allocator settings, except where a MIMALLOC_* variable is set, and logs
/// what the allocator runs with. Runs before any shard thread exists.
#[allow(unsafe_code)]
fn configure_allocator(config: &Config) {
    let server = &config.server;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        let delay = server.allocator_purge_delay_ms.clamp(-1, i64::from(i32::MAX));
        // SAFETY: stores an option value; no other thread is using the allocator's options.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay as _) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let allow = i32::from(server.allocator_huge_pages);
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, allow as _) };
        if !server.allocator_huge_pages {
            // mimalloc reads the option when it starts, before main, and then asks for huge
            // pages on its arenas; this turns THP off for the whole process instead.
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        }
    }
    // SAFETY: reads option values.
    let (delay, thp) = unsafe {
        (
            libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP),
        )
    };
    tracing::info!(purge_delay_ms = delay, huge_pages = thp != 0, "allocator");
}

/// Returns the calling thread's freed mimalloc memory to the kernel now (the shards call it
/// after a wave of connections went dormant). `allocator_purge_delay_ms = -1` still keeps it.
#[allow(unsafe_code)]
fn release_memory() {
    // SAFETY: collects the calling thread's own heap; no pointers are passed.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn load(
    path: Option<PathBuf>,
    nats_listen: Option<SocketAddr>,
    mqtt_listen: Option<SocketAddr>,
    shards: Option<usize>,
) -> Result<Config, String> {
    let mut config = match path {
        Some(path) => Config::from_file(&path)?,
        None => Config::default(),
    };
    if let Some(addr) = nats_listen {
        config.nats.listen = addr;
    }
    if let Some(addr) = mqtt_listen {
        config.mqtt.listen = addr;
    }
    if let Some(shards) = shards {
        config.server.shards = shards;
    }
    config.validate()?;
    Ok(config)
}
