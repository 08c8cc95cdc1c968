//! The `consul-dns` binary: parse flags, load configuration, start logging, run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use consul_dns::app::{self, Reloader};
use consul_dns::backend::file;
use consul_dns::cli::{Cli, Command};
use consul_dns::dns::forward::host::Host;
use consul_dns::{config, healthcheck, telemetry};

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { addr, name, timeout_ms }) = &cli.command {
        return match healthcheck::check(addr.as_deref(), name, Duration::from_millis(*timeout_ms)) {
            Ok(summary) => {
                println!("ok: {summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("consul-dns healthcheck: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Db(args)) = &cli.command {
        return db(&cli, args);
    }
    let config = match config::load(cli.config.as_deref(), cli.settings.clone(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("consul-dns: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(store) = config
        .database
        .as_ref()
        .map(|d| d.url.to_string())
        .or_else(|| config.etcd.as_ref().map(|e| e.endpoints.join(", ")))
    {
        // The stores are reached by `consul-dns db` today; the daemon's source for them comes
        // with the source seam. Refuse instead of silently serving the static catalog.
        eprintln!(
            "consul-dns: {store}: the daemon cannot serve from a database or etcd yet; only `consul-dns db` uses it"
        );
        return ExitCode::from(2);
    }
    if cli.check_config {
        return check_config(&config);
    }
    if let Err(e) = telemetry::init(&config.log_level, config.log_format) {
        eprintln!("consul-dns: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("consul-dns: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reloader = Reloader { config_file: cli.config.clone(), flags: cli.settings.clone(), env: Box::new(env) };
    match runtime.block_on(app::run(config, reloader)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "Fatal error.");
            eprintln!("consul-dns: {e:#}");
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
    let target = match (config.database, config.etcd) {
        (Some(database), _) => Target::Sql(database),
        (None, Some(etcd)) => Target::Etcd(etcd),
        (None, None) => {
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
            println!("{output}");
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
    if let Some(consul) = &config.consul {
        let state = config
            .state_dir
            .as_ref()
            .map_or_else(|| "no state_dir".to_owned(), |d| format!("state_dir {}", d.display()));
        println!("configuration OK; Consul backend at {} ({state})", consul.address);
        println!("{}", recursion_summary(config));
        return ExitCode::SUCCESS;
    }
    match file::build(&config.catalog, Arc::new(config.build_options())) {
        Ok((snapshot, _)) => {
            let counts = snapshot.counts();
            println!(
                "configuration OK; catalog {:?}: {} services, {} instances, {} nodes",
                config.catalog, counts.services, counts.instances, counts.nodes
            );
            println!("{}", recursion_summary(config));
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
/// One line on where names outside the domain go, as the daemon would set it up here.
fn recursion_summary(config: &config::Config) -> String {
    let (host, problems) = Host::probe(config.resolv_conf());
    let settings = config.dns_settings(&host);
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
