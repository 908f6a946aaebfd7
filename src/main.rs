//! The `isthmus` command: parse flags, load the config, hand over to `serve`.

use clap::{Parser, Subcommand};
use isthmus::config::{Config, DEFAULT_TOML};
use std::net::SocketAddr;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "isthmus", version, about = "A thread-per-core NATS and MQTT broker on io_uring")]
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
            load(config, nats_listen, mqtt_listen, shards).and_then(isthmus::serve::run)
        }
        Command::Doctor { config, shards, connections, strict } => load(config, None, None, shards)
            .map(|config| {
                if isthmus::doctor::run(&config, connections) && strict {
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
