//! Wiring: seed the catalog, bind the sockets, start the DNS workers, the HTTP listener and
//! the catalog source, then follow the control events (reload re-reads the configuration;
//! stop: readiness fails at once, TCP connections drain within `server::TCP_DRAIN`, then the
//! source and the HTTP listener stop). The process's signals are not installed here: `main`
//! turns them into control events, and a test can run the daemon in process with its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::publish::Publisher;
use crate::backend::{self, Source, seed};
use crate::catalog::{BuildOptions, Catalog};
use crate::config::{self, Config, Layer};
use crate::dns::Settings;
use crate::dns::forward::Forwarder;
use crate::dns::forward::host::Host;
use crate::dns::server::{self, Shared};
use crate::http;
use crate::shutdown::Event;
use crate::telemetry;

/// Looks up an environment variable (the binary passes `std::env::var`, tests a map).
pub type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send>;

/// What a reload re-reads: the config file and environment, under the same flags.
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

/// A started daemon: answering DNS, its source running, waiting for control events.
pub struct Daemon {
    /// The DNS addresses bound (UDP and TCP on each).
    pub dns: Vec<SocketAddr>,
    /// The HTTP listener's address, if it is on.
    pub http: Option<SocketAddr>,
    config: Config,
    reloader: Reloader,
    shared: Shared,
    running: server::Running,
    http_task: Option<tokio::task::JoinHandle<()>>,
    source_task: tokio::task::JoinHandle<()>,
    catalog_file: watch::Sender<config::CatalogSource>,
    options: watch::Sender<Arc<crate::catalog::BuildOptions>>,
    cancel: CancellationToken,
}

/// Runs the daemon until a [`Event::Shutdown`] arrives on `control` (or it closes).
pub async fn run(config: Config, reloader: Reloader, control: mpsc::Receiver<Event>) -> anyhow::Result<()> {
    start(config, reloader).await?.serve(control).await;
    Ok(())
}

/// Seeds the catalog, binds every socket and starts serving and syncing.
pub async fn start(config: Config, reloader: Reloader) -> anyhow::Result<Daemon> {
    let started = Instant::now();
    let backend = Source::backend(&config.sources);
    info!(
        backend = backend.label(),
        static_catalog = %config.sources.static_catalog.as_ref().map_or_else(|| "none".to_owned(), |c| c.to_string()),
        why = %config.sources.reason,
        "Catalog source chosen."
    );
    let options = Arc::new(BuildOptions::from_config(&config));
    let seed = seed::seed(&config, &options).context("static catalog")?;
    let counts = seed.snapshot.counts();
    let catalog = Arc::new(Catalog::new(seed.snapshot));
    match &seed.restored {
        Some(restored) => telemetry::catalog_restored(backend, restored.confirmed, counts, catalog.load().serial()),
        None if config.sources.live.is_none() => {
            telemetry::sync_succeeded(backend, "start", counts, catalog.load().serial())
        }
        None => {}
    }

    // Before anything listens: the publisher exports the source's metrics from the start.
    let (options_tx, options_rx) = watch::channel(options);
    let static_catalog = config.sources.static_catalog.clone().unwrap_or(config::CatalogSource::Embedded);
    let (catalog_file, catalog_rx) = watch::channel(static_catalog);
    let state_dir = config.sources.live.as_ref().and(config.state_dir.clone());
    let mut publisher = Publisher::new(backend, Arc::clone(&catalog), options_rx, state_dir, seed.restored);
    if let Some(dc) = &seed.datacenter {
        publisher.set_datacenter(dc);
    }

    let shared = Shared {
        catalog: Arc::clone(&catalog),
        settings: Arc::new(ArcSwap::from_pointee(dns_settings(&config, None))),
        forwarder: Arc::new(Forwarder::default()),
    };
    let bound = server::bind(&config.listen, config.udp_workers)?;
    let dns: Vec<SocketAddr> = bound.iter().map(|b| b.addr).collect();
    let http_listener = match config.http {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let running = server::start(bound, &shared, config.tcp)?;

    let cancel = CancellationToken::new();
    let http_task = http_listener.map(|listener| {
        // max_stale also bounds readiness: a live source's catalog not confirmed for longer is stale.
        let max_age = config.sources.live.as_ref().and(config.max_stale);
        let state = http::State { catalog: Arc::clone(&catalog), metrics: telemetry::metrics(), max_age, started };
        http::serve(listener, Arc::new(state), cancel.clone())
    });
    let source = Source::new(&config.sources, catalog_rx, seed.version);
    let source_task = backend::start(source, publisher, cancel.clone());
    Ok(Daemon {
        dns,
        http: http_addr,
        config,
        reloader,
        shared,
        running,
        http_task,
        source_task,
        catalog_file,
        options: options_tx,
        cancel,
    })
}

impl Daemon {
    /// Follows `control` until [`Event::Shutdown`] (or until it closes), then stops.
    pub async fn serve(mut self, mut control: mpsc::Receiver<Event>) {
        while let Some(Event::Reload) = control.recv().await {
            self.reload();
        }
        telemetry::metrics().set_stopping();
        info!("Shutting down.");
        self.running.stop().await;
        self.cancel.cancel();
        let _ = self.source_task.await;
        if let Some(http) = self.http_task {
            let _ = http.await;
        }
        info!("Stopped.");
    }

    fn reload(&mut self) {
        let next = match self.reloader.load() {
            Ok(next) => next,
            Err(e) => return telemetry::config_rejected(&e),
        };
        let current = &self.config;
        if next.listen != current.listen
            || next.udp_workers != current.udp_workers
            || next.tcp != current.tcp
            || next.http != current.http
        {
            warn!(?next.listen, ?next.http, "Listen addresses, workers and TCP limits change only on restart.");
        }
        if next.log_level != current.log_level || next.log_format != current.log_format {
            warn!(next.log_level, "Log level and format change only on restart.");
        }
        let previous = self.shared.settings.load_full();
        self.shared.settings.store(Arc::new(dns_settings(&next, Some(&previous))));
        if next.sources.live != current.sources.live || next.state_dir != current.state_dir {
            warn!("The live source and the state directory change only on restart.");
        } else if next.sources.static_catalog != current.sources.static_catalog
            && let Some(catalog) = next.sources.static_catalog.clone()
        {
            let _ = self.catalog_file.send(catalog);
        }
        let _ = self.options.send(Arc::new(BuildOptions::from_config(&next)));
        telemetry::config_reloaded();
        self.config = next;
    }
}

/// DNS settings for `config`, completed with what the machine says (resolv.conf, interfaces).
/// Logs problems reading those, and the recursion set-up when it is new or changed.
fn dns_settings(config: &Config, previous: Option<&Settings>) -> Settings {
    let (host, problems) = Host::probe(config.resolv_conf());
    for problem in problems {
        warn!(%problem, "Host information incomplete.");
    }
    let settings = Settings::from_config(config, &host);
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
