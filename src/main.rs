//! The `consul-dns` binary: parse flags, load configuration, start logging, run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use consul_dns::app::{self, Reloader};
use consul_dns::backend::file;
use consul_dns::cli::{Cli, Command};
use consul_dns::dns::forward::host::Host;
use consul_dns::shutdown::{Event, Signals};
use consul_dns::{config, healthcheck, query, telemetry};

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Prints one line on stdout. A reader that went away (`--check-config | head -1`) is not an
/// error worth a word, let alone a panic; other write errors are reported.
fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout(), "{line}")
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("consul-dns: cannot write to stdout: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Db(args)) = &cli.command {
        return db(&cli, args);
    }
    let (config, explained) = match config::load_explained(cli.config.as_deref(), cli.settings.clone(), &env) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("consul-dns: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let env_warnings = config::origin::unknown_env_vars(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
    if cli.print_config {
        env_warnings.iter().for_each(|w| eprintln!("consul-dns: warning: {w}"));
        say(explained.render().trim_end());
        return ExitCode::SUCCESS;
    }
    match &cli.command {
        Some(Command::Healthcheck { addr, name, timeout_ms }) => {
            return health(&config, addr.as_deref(), name.as_deref(), Duration::from_millis(*timeout_ms));
        }
        Some(Command::Query { name, qtype, server, tcp, timeout_ms }) => {
            return ask(&config, server.as_deref(), name, qtype, *tcp, Duration::from_millis(*timeout_ms));
        }
        Some(Command::Db(_)) | None => {}
    }
    if let Err(e) = config.sources.require_catalog() {
        eprintln!("consul-dns: configuration error: {e}");
        return ExitCode::from(2);
    }
    if cli.check_config {
        env_warnings.iter().for_each(|w| eprintln!("consul-dns: warning: {w}"));
        return check_config(&config);
    }
    if let Err(e) = telemetry::init(&config.log_level, config.log_format) {
        eprintln!("consul-dns: {e}");
        return ExitCode::from(2);
    }
    for warning in &env_warnings {
        tracing::warn!("{warning}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all().on_thread_park(consul_dns::memory::on_idle);
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("consul-dns: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reloader = Reloader { config_file: cli.config.clone(), flags: cli.settings.clone(), env: Box::new(env) };
    match runtime.block_on(run(config, reloader)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, through the log (JSON with --log-format json), not again on stderr.
            tracing::error!(error = format!("{e:#}"), "Fatal error.");
            ExitCode::FAILURE
        }
    }
}

/// Installs the signal handlers first (a SIGTERM during start-up must be handled, not take
/// the default action), then runs the daemon on the events they produce.
async fn run(config: config::Config, reloader: Reloader) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let (control, events) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let event = signals.next().await;
            if control.send(event).await.is_err() || event == Event::Shutdown {
                return;
            }
        }
    });
    app::run(config, reloader, events).await
}

/// The daemon this configuration describes, unless `addr` says otherwise.
fn target(config: &config::Config, addr: Option<&str>) -> Result<std::net::SocketAddr, healthcheck::HealthError> {
    match addr {
        Some(text) => healthcheck::parse_addr(text),
        None => config.listen.first().copied().map(healthcheck::reachable).ok_or_else(|| {
            healthcheck::HealthError::Usage("the configuration has no listen address; give ADDR".into())
        }),
    }
}

/// `query NAME [TYPE]`: the reply on stdout; exit 0 whenever a reply came, as dig.
fn ask(
    config: &config::Config,
    server: Option<&str>,
    name: &str,
    qtype: &str,
    tcp: bool,
    timeout: Duration,
) -> ExitCode {
    let result = target(config, server)
        .map_err(|e| query::QueryError::Usage(e.to_string()))
        .and_then(|addr| Ok((addr, query::parse_type(qtype)?)))
        .and_then(|(addr, qtype)| query::run(addr, name, qtype, tcp, timeout));
    match result {
        Ok(text) => {
            say(text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("consul-dns query: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `healthcheck`: the daemon this configuration describes, unless told otherwise.
fn health(config: &config::Config, addr: Option<&str>, name: Option<&str>, timeout: Duration) -> ExitCode {
    let target = target(config, addr);
    let name = name.unwrap_or(config.domain.text());
    match target.and_then(|addr| healthcheck::check(addr, name, timeout)) {
        Ok(summary) => {
            say(format_args!("ok: {summary}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("consul-dns healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `consul-dns db ...`: the same configuration as the daemon (file, environment, flags before
/// and after `db`), then one command on its database or etcd.
fn db(cli: &Cli, args: &consul_dns::cli::DbArgs) -> ExitCode {
    use consul_dns::backend::registry::command::{self, Target};
    let flags = cli.settings.clone().overlay(args.layer());
    let config = match config::load(cli.config.as_deref(), flags, &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("consul-dns db: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let target = match config.sources.live {
        Some(config::LiveSource::Sql(database)) => Target::Sql(database),
        Some(config::LiveSource::Etcd(etcd)) => Target::Etcd(etcd),
        _ => {
            eprintln!(
                "consul-dns db: no catalog store given: use --database-url URL or --etcd URL \
                 (or CONSUL_DNS_DATABASE_URL / CONSUL_DNS_ETCD)"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("consul-dns db: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command::execute(&args.action, &target)) {
        Ok(output) => {
            say(output);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("consul-dns db: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: the configuration parsed; now the catalog must load and build.
fn check_config(config: &config::Config) -> ExitCode {
    let sources = &config.sources;
    if let Some(config::LiveSource::Consul(consul)) = &sources.live {
        let state = config
            .state_dir
            .as_ref()
            .map_or_else(|| "no state_dir".to_owned(), |d| format!("state_dir {}", d.display()));
        say(format_args!("configuration OK; Consul source at {} ({state}; {})", consul.address, sources.reason));
        say(recursion_summary(config));
        return ExitCode::SUCCESS;
    }
    match &sources.live {
        Some(config::LiveSource::Sql(database)) => {
            let (kind, url) = (database.url.dialect().name(), &database.url);
            say(format_args!("configuration OK; {kind} source at {url} ({})", sources.reason));
            say(recursion_summary(config));
            return ExitCode::SUCCESS;
        }
        Some(config::LiveSource::Etcd(etcd)) => {
            let at = etcd.endpoints.join(", ");
            say(format_args!("configuration OK; etcd source at {at}, prefix {} ({})", etcd.prefix, sources.reason));
            say(recursion_summary(config));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let Some(catalog) = &sources.static_catalog else { return ExitCode::from(2) };
    match file::build(catalog, Arc::new(consul_dns::catalog::BuildOptions::from_config(config))) {
        Ok((snapshot, _)) => {
            let counts = snapshot.counts();
            say(format_args!(
                "configuration OK; static catalog {catalog}: {} services, {} instances, {} nodes",
                counts.services, counts.instances, counts.nodes
            ));
            say(recursion_summary(config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("consul-dns: catalog error: {e}");
            ExitCode::from(2)
        }
    }
}

#[global_allocator]
static GLOBAL: consul_dns::memory::Allocator = consul_dns::memory::Allocator {};

/// jemalloc's options, read at its start: profiling on, one sample per 2^19 bytes (512 KiB)
/// allocated on average, so the cost is paid by large allocations, not per query.
#[cfg(feature = "heap-profile")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "malloc_conf")]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";
/// One line on where names outside the domain go, as the daemon would set it up here.
fn recursion_summary(config: &config::Config) -> String {
    let (host, problems) = Host::probe(config.resolv_conf());
    let settings = consul_dns::dns::Settings::from_config(config, &host);
    let mut line = match (&settings.recursion.upstreams[..], config.resolv_conf()) {
        ([], _) => "recursion: off (names outside the domain are REFUSED)".to_owned(),
        (upstreams, from) => format!(
            "recursion: {upstreams:?} (from {}) for clients in {}",
            from.map_or_else(|| "configuration".into(), |p| p.display().to_string()),
            settings.acl.allow_recursion.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    for problem in problems {
        line.push_str(&format!("; {problem}"));
    }
    line
}
