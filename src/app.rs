//! Wiring: build the first snapshot, bind the sockets, start the DNS workers, the HTTP
//! listener and the backend, then react to signals (SIGHUP reloads, SIGTERM/SIGINT stop:
//! readiness fails at once, TCP connections drain within `server::TCP_DRAIN`, then the
//! backend and the HTTP listener stop).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::{consul, file};
use crate::catalog::Catalog;
use crate::config::{self, Config, Layer};
use crate::dns::Settings;
use crate::dns::forward::Forwarder;
use crate::dns::forward::host::Host;
use crate::dns::server::{self, Shared};
use crate::http;
use crate::shutdown::{Event, Signals};
use crate::telemetry::{self, Backend};

/// Looks up an environment variable (the binary passes `std::env::var`, tests a map).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send>;

/// What SIGHUP re-reads: the config file and environment, under the same flags.
pub struct Reloader {
    /// `--config`.
    pub config_file: Option<PathBuf>,
    /// The command-line layer.
    pub flags: Layer,
    /// Environment lookup.
    pub env: EnvLookup,
}

impl Reloader {
    fn load(&self) -> Result<Config, config::ConfigError> {
        config::load(self.config_file.as_deref(), self.flags.clone(), &*self.env)
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config: Config, reloader: Reloader) -> anyhow::Result<()> {
    // Before anything can announce readiness: a SIGTERM that arrives during start-up must be
    // handled, not take the default action.
    let mut signals = Signals::install()?;
    let started = Instant::now();
    let options = Arc::new(config.build_options());
    let (snapshot, version, restored) = match &config.consul {
        Some(_) => {
            let (snapshot, restored) = consul::seed::initial(&config, &options);
            (snapshot, None, restored)
        }
        None => {
            let (snapshot, version) = file::build(&config.catalog, Arc::clone(&options)).context("static catalog")?;
            (snapshot, version, None)
        }
    };
    let counts = snapshot.counts();
    let catalog = Arc::new(Catalog::new(snapshot));
    match (&config.consul, &restored) {
        (None, _) => telemetry::sync_succeeded(Backend::File, "start", counts, catalog.load().serial()),
        (Some(_), Some(restored)) => {
            telemetry::catalog_restored(Backend::Consul, restored.confirmed, counts, catalog.load().serial())
        }
        (Some(_), None) => {}
    }

    let settings = dns_settings(&config, None);
    let shared = Shared {
        catalog: Arc::clone(&catalog),
        settings: Arc::new(ArcSwap::from_pointee(settings)),
        forwarder: Arc::new(Forwarder::default()),
    };
    let bound = server::bind(&config.listen, config.udp_workers)?;
    let http_listener = match config.http {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let dns = server::start(bound, &shared)?;

    let cancel = CancellationToken::new();
    let http = http_listener.map(|listener| {
        // Consul's max_stale also bounds readiness: a catalog not confirmed for longer is stale.
        let max_age = config.consul.as_ref().and(config.max_stale);
        let state = http::State { catalog: Arc::clone(&catalog), metrics: telemetry::metrics(), max_age, started };
        http::serve(listener, Arc::new(state), cancel.clone())
    });
    let (options_tx, options_rx) = watch::channel(options);
    let (source_tx, source_rx) = watch::channel(config.catalog.clone());
    let backend = match &config.consul {
        // Consul is the live source; a static catalog given as well only seeded the first answers.
        Some(settings) => {
            let (catalog, state_dir) = (Arc::clone(&catalog), config.state_dir.clone());
            let syncer = consul::Syncer::new(settings.clone(), catalog, options_rx, state_dir, restored)?;
            tokio::spawn(syncer.run(cancel.clone()))
        }
        None => tokio::spawn(watch_static(source_rx, version, Arc::clone(&catalog), options_rx, cancel.clone())),
    };

    let mut current = config;
    while signals.next().await == Event::Reload {
        match reloader.load() {
            Ok(next) => {
                if next.listen != current.listen || next.udp_workers != current.udp_workers || next.http != current.http
                {
                    warn!(?next.listen, ?next.http, "Listen addresses and workers change only on restart.");
                }
                if next.log_level != current.log_level || next.log_format != current.log_format {
                    warn!(next.log_level, "Log level and format change only on restart.");
                }
                let previous = shared.settings.load_full();
                shared.settings.store(Arc::new(dns_settings(&next, Some(&previous))));
                if next.catalog != current.catalog {
                    let _ = source_tx.send(next.catalog.clone());
                }
                if next.consul != current.consul || next.state_dir != current.state_dir {
                    warn!("Consul settings and the state directory change only on restart.");
                }
                let _ = options_tx.send(Arc::new(next.build_options()));
                telemetry::config_reloaded();
                current = next;
            }
            Err(e) => telemetry::config_rejected(&e),
        }
    }
    telemetry::metrics().set_stopping();
    info!("Shutting down.");
    dns.stop().await;
    cancel.cancel();
    let _ = backend.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    info!("Stopped.");
    Ok(())
}

/// DNS settings for `config`, completed with what the machine says (resolv.conf, interfaces).
/// Logs problems reading those, and the recursion set-up when it is new or changed.
fn dns_settings(config: &Config, previous: Option<&Settings>) -> Settings {
    let (host, problems) = Host::probe(config.resolv_conf());
    for problem in problems {
        warn!(%problem, "Host information incomplete.");
    }
    let settings = config.dns_settings(&host);
    let recursion = &settings.recursion;
    let changed = previous.is_none_or(|p| p.recursion != *recursion || p.acl != settings.acl);
    if changed && recursion.is_enabled() {
        let allow_recursion: Vec<String> = settings.acl.allow_recursion.iter().map(|c| c.to_string()).collect();
        info!(
            recursors = ?recursion.upstreams,
            from = ?config.resolv_conf().map_or_else(|| "configuration".into(), |p| p.display().to_string()),
            strategy = ?recursion.strategy,
            timeout_ms = recursion.timeout.as_millis() as u64,
            ?allow_recursion,
            "Recursion on for names outside the domain."
        );
    } else if changed {
        info!("Recursion off: names outside the domain are REFUSED.");
    }
    settings
}

/// Runs the static backend, restarting it on the new source when the config names another file.
async fn watch_static(
    mut source: watch::Receiver<config::CatalogSource>,
    mut version: Option<file::Fingerprint>,
    catalog: Arc<Catalog>,
    options: watch::Receiver<Arc<crate::catalog::BuildOptions>>,
    cancel: CancellationToken,
) {
    loop {
        let current = source.borrow_and_update().clone();
        let stop = cancel.child_token();
        let task =
            tokio::spawn(file::watch(current, version.take(), Arc::clone(&catalog), options.clone(), stop.clone()));
        tokio::select! {
            _ = cancel.cancelled() => { let _ = task.await; return; }
            changed = source.changed() => {
                stop.cancel();
                let _ = task.await;
                if changed.is_err() { return; }
            }
        }
    }
}
