//! The `port_exporter` binary: flags, logging, config, then [`port_exporter::run`].

use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use port_exporter::config::Config;
use port_exporter::schedule::shard::{Shard, ShardIndex};
use port_exporter::web::security::WebConfig;
use port_exporter::{Options, limits, logging};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Prometheus exporter of TCP port states: open, closed, filtered.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Flags {
    /// Config file (TOML); without it, an embedded default probes localhost's common ports.
    #[arg(long = "config.file", value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// Validate the config and exit: 0 when it is valid, 1 when not.
    #[arg(long = "config.check")]
    config_check: bool,
    /// Address to listen on for HTTP; ":PORT" means every interface.
    #[arg(long = "web.listen-address", default_value = ":9799")]
    listen_address: String,
    /// Web config file (YAML, the exporter-toolkit format): TLS and basic auth.
    #[arg(long = "web.config.file", value_name = "PATH")]
    web_config_file: Option<PathBuf>,
    /// Most HTTP requests handled at once; more get 503 (0: no cap).
    #[arg(long = "web.max-requests", default_value_t = Options::default().max_requests)]
    max_requests: usize,
    /// Most HTTP connections open at once; more are closed at once.
    #[arg(long = "web.max-connections", default_value_t = Options::default().max_connections)]
    max_connections: usize,
    /// A response that makes no progress (its client does not read) for this long is dropped.
    #[arg(long = "web.write-timeout", default_value = "30s", value_parser = parse_duration_flag)]
    write_timeout: std::time::Duration,
    /// A connection that sends no request for this long is closed.
    #[arg(long = "web.idle-timeout", default_value = "2m", value_parser = parse_duration_flag)]
    idle_timeout: std::time::Duration,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    telemetry_path: String,
    /// Most probes in flight at once (lowered to fit the file descriptor limit).
    #[arg(long = "probe.concurrency", default_value_t = Options::default().max_in_flight)]
    concurrency: usize,
    /// Most probes started per second, all targets together (0: unlimited).
    #[arg(long = "probe.rate", default_value_t = Options::default().max_per_second)]
    rate: u32,
    /// Split the targets' ports over this many replicas (by a stable hash of target and port).
    #[arg(long = "shard.count", default_value_t = 1)]
    shard_count: u32,
    /// This replica's shard, 0 to count-1, or "hostname" for the host name's trailing number
    /// (a StatefulSet pod's ordinal).
    #[arg(long = "shard.index", default_value = "0")]
    shard_index: ShardIndex,
    /// Only log messages at this level or above.
    #[arg(long = "log.level", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    log_level: String,
    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value_t = logging::Format::Logfmt)]
    log_format: logging::Format,
}

fn main() -> ExitCode {
    #[cfg(target_env = "gnu")]
    return_large_blocks_to_the_system();
    let flags = Flags::parse();
    if flags.config_check {
        return check_config(&flags);
    }
    let level = flags
        .log_level
        .parse()
        .expect("clap allows only valid levels");
    logging::init(level, flags.log_format);
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "exiting");
            ExitCode::FAILURE
        }
    }
}

fn load_config(flags: &Flags) -> Result<Config, port_exporter::config::ConfigError> {
    Config::load(flags.config_file.as_deref())
}

fn check_config(flags: &Flags) -> ExitCode {
    match load_config(flags) {
        Ok(config) => {
            let ports: usize = config.targets.iter().map(|t| t.ports.len()).sum();
            println!("config OK: {} targets, {ports} ports", config.targets.len());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("config invalid: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: Flags) -> anyhow::Result<()> {
    let config = load_config(&flags)?;
    let origin = flags
        .config_file
        .as_ref()
        .map_or("embedded default".into(), |p| p.display().to_string());
    let web_config = flags
        .web_config_file
        .as_deref()
        .map(WebConfig::from_file)
        .transpose()?;
    let shard = shard(&flags)?;
    let max_in_flight = fit_concurrency(flags.concurrency);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let address = listen_address(&flags.listen_address)?;
        let listener = bind(address)
            .await
            .with_context(|| format!("cannot listen on {}", flags.listen_address))?;
        tracing::info!(
            config = %origin,
            targets = config.targets.len(),
            address = %listener.local_addr()?,
            max_in_flight,
            "port_exporter started"
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let options = Options {
            max_in_flight,
            max_per_second: flags.rate,
            telemetry_path: flags.telemetry_path,
            web_config,
            config_file: flags.config_file,
            reload_on_sighup: true,
            shard,
            max_requests: flags.max_requests,
            max_connections: flags.max_connections,
            timeouts: port_exporter::web::Timeouts {
                write: flags.write_timeout,
                idle: flags.idle_timeout,
            },
        };
        port_exporter::run(config, listener, options, shutdown).await?;
        tracing::info!("port_exporter stopped");
        Ok(())
    });
    // getaddrinfo on a dead resolver cannot be cancelled: do not wait for it past the grace
    // period the HTTP server already had.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// The `--shard.*` flags; `None` when there is one shard.
fn shard(flags: &Flags) -> anyhow::Result<Option<Shard>> {
    if flags.shard_count == 1 {
        return Ok(None);
    }
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let index = flags.shard_index.resolve(&hostname)?;
    let shard = Shard::new(index, flags.shard_count)?;
    tracing::info!(
        index,
        count = flags.shard_count,
        "probing one shard of the config"
    );
    Ok(Some(shard))
}

/// Raises the fd limit and lowers `wanted` below it if needed, with a warning.
fn fit_concurrency(wanted: usize) -> usize {
    match limits::raise_fd_limit() {
        Ok(fd_limit) => {
            let fits = limits::max_in_flight_for(fd_limit);
            if wanted > fits {
                tracing::warn!(
                    wanted,
                    fd_limit,
                    max_in_flight = fits,
                    "concurrency lowered to fit the file descriptor limit"
                );
            }
            wanted.min(fits)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the file descriptor limit");
            wanted
        }
    }
}

/// Makes glibc give blocks of 1 MiB and more back to the system when they are freed.
///
/// By default glibc raises its mmap threshold to the size of each large block freed, and from
/// then on serves blocks of that size from heaps it keeps. The table's renderings are such
/// blocks (megabytes each); those that slow scrapers held for a while, then let go, stayed
/// resident. Measured with 300 stalled readers on 10,000 pairs (renderings of 12 MiB, the
/// bound on renderings held at 128 MiB): +327 MiB resident with the dynamic threshold, +144
/// MiB with it fixed. Renderings reuse their memory when no scraper holds it, so the common
/// path allocates nothing either way.
#[cfg(target_env = "gnu")]
fn return_large_blocks_to_the_system() {
    // SAFETY: mallopt only sets a parameter of the allocator; nothing else runs yet.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// A duration flag, written as in the config ("30s", "2m").
fn parse_duration_flag(text: &str) -> Result<std::time::Duration, String> {
    match port_exporter::config::duration::parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "expected a duration greater than zero such as \"30s\" or \"2m\", got {text:?}"
        )),
    }
}

/// Parses `host:port` or `:port` (every interface).
fn listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .with_context(|| format!("invalid port in listen address {text:?}"))?;
        return Ok(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(addr) => Ok(addr),
            None => bail!("listen address {text:?} resolves to nothing"),
        },
        Err(error) => bail!("invalid listen address {text:?}: {error}"),
    }
}

/// Binds `address`; the all-interfaces IPv6 address falls back to IPv4 on hosts without IPv6.
async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(address).await {
        Err(_) if address.ip() == Ipv6Addr::UNSPECIFIED => {
            tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], address.port()))).await
        }
        result => result,
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
    shutdown.cancel();
}
