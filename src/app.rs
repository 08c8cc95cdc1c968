//! Wiring: seed the catalog, bind the sockets, start the DNS workers, the HTTP listener and
//! the catalog source, then follow the control events (reload re-reads the configuration;
//! stop: readiness fails at once, TCP connections drain within `server::TCP_DRAIN`, then the
//! source and the HTTP listener stop). The source's and the HTTP listener's tasks are watched
//! meanwhile: one that panics or ends on its own is logged and counted, and the daemon stops
//! and returns an error (the binary exits 1) rather than go on half alive — answering from a
//! catalog nothing updates any more, or with nothing behind `/ready`. The process's signals are not installed here: `main`
//! turns them into control events, and a test can run the daemon in process with its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

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
use crate::supervise::{self, TaskDied};
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
    http_task: Option<JoinHandle<()>>,
    source_task: Option<JoinHandle<()>>,
    catalog_file: watch::Sender<config::CatalogSource>,
    options: watch::Sender<Arc<crate::catalog::BuildOptions>>,
    cancel: CancellationToken,
}

/// Runs the daemon until a [`Event::Shutdown`] arrives on `control` (or it closes). Fails when
/// it cannot start, or when a background task dies (see [`Daemon::serve`]).
pub async fn run(config: Config, reloader: Reloader, control: mpsc::Receiver<Event>) -> anyhow::Result<()> {
    start(config, reloader).await?.serve(control).await
}

/// How the task `task` ended, as a death.
fn task_died(task: &'static str, ended: Result<(), JoinError>) -> TaskDied {
    match ended {
        Ok(()) => TaskDied { task, how: "ended on its own".to_owned() },
        Err(e) if e.is_panic() => TaskDied::panicked(task, &*e.into_panic()),
        Err(_) => TaskDied { task, how: "was cancelled".to_owned() },
    }
}

/// Waits for `task` to end; never, when there is none.
async fn ended(task: &mut Option<JoinHandle<()>>) -> Result<(), JoinError> {
    match task {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
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
    let restored = seed.restored.is_some();
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
        let live = config.sources.live.as_ref().map(|_| backend);
        let metrics = telemetry::metrics();
        let state = http::State { catalog: Arc::clone(&catalog), metrics, max_age, started, live, restored };
        http::serve(listener, Arc::new(state), cancel.clone())
    });
    let source = Source::new(&config.sources, catalog_rx, seed.version);
    let source_task = Some(backend::start(source, publisher, cancel.clone()));
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
    /// Follows `control` until [`Event::Shutdown`] (or until it closes), then stops. Should the
    /// source's or the HTTP listener's task end first (a panic), or a task of [`supervise`]
    /// die, it is logged and counted, the daemon stops the same way and the error says which
    /// task died.
    pub async fn serve(mut self, mut control: mpsc::Receiver<Event>) -> anyhow::Result<()> {
        let (mut source_task, mut http_task) = (self.source_task.take(), self.http_task.take());
        let died = loop {
            tokio::select! {
                event = control.recv() => match event {
                    Some(Event::Reload) => self.reload().await,
                    Some(Event::Shutdown) | None => break None,
                },
                end = ended(&mut source_task) => {
                    source_task = None;
                    let died = task_died("source", end);
                    telemetry::metrics().task_failed(died.task);
                    break Some(died);
                }
                end = ended(&mut http_task) => {
                    http_task = None;
                    let died = task_died("http", end);
                    telemetry::metrics().task_failed(died.task);
                    break Some(died);
                }
                // Counted where it was caught.
                died = supervise::death() => break Some(died),
            }
        };
        let metrics = telemetry::metrics();
        metrics.set_stopping();
        match &died {
            Some(died) => error!(task = died.task, how = %died.how, "A background task died; shutting down."),
            None => info!("Shutting down."),
        }
        self.running.stop().await;
        self.cancel.cancel();
        for task in [source_task, http_task].into_iter().flatten() {
            let _ = task.await;
        }
        info!("Stopped.");
        match died {
            Some(died) => Err(died.into()),
            None => Ok(()),
        }
    }

    /// Applies a new configuration, or none of it: a bad log level or a static catalog that
    /// does not load fails the whole reload (counted and logged as failed).
    async fn reload(&mut self) {
        let next = match self.reloader.load() {
            Ok(next) => next,
            Err(e) => return telemetry::config_rejected(&e),
        };
        if let Err(e) = telemetry::check_log_level(&next.log_level) {
            return telemetry::config_rejected(&e);
        }
        if next.sources.live.is_none()
            && let Some(catalog) = next.sources.static_catalog.clone()
        {
            let datacenter = next.datacenter.clone();
            let checked = tokio::task::spawn_blocking(move || backend::file::read(&catalog, &datacenter).map(drop));
            match checked.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return telemetry::reload_catalog_rejected(&e),
                Err(e) => return telemetry::reload_catalog_rejected(&e),
            }
        }
        let current = &self.config;
        if next.listen != current.listen
            || next.udp_workers != current.udp_workers
            || next.tcp != current.tcp
            || next.http != current.http
        {
            let listen: Vec<String> = next.listen.iter().map(ToString::to_string).collect();
            let http = next.http.map_or_else(|| "off".to_owned(), |a| a.to_string());
            warn!(?listen, %http, "Listen addresses, workers and TCP limits change only on restart.");
        }
        if next.log_level != current.log_level
            && let Err(e) = telemetry::set_log_level(&current.log_level, &next.log_level)
        {
            warn!(error = %e, "The log level could not be changed.");
        }
        if next.log_format != current.log_format {
            warn!("The log format changes only on restart.");
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
            strategy = recursion.strategy.label(),
            timeout_ms = recursion.timeout.as_millis() as u64,
            ?allow_recursion,
            "Recursion on for names outside the domain."
        );
    } else if changed {
        info!("Recursion off: names outside the domain are REFUSED.");
    }
    settings
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    /// The real source task panics (the test-only fault of `backend::faults`): `/ready` fails
    /// at once, the supervisor counts it, stops the daemon and returns an error naming the task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_source_task_fails_readiness_and_stops_the_daemon() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("CONSUL_DNS_STATIC", "builtin"),
            ("CONSUL_DNS_LISTEN", "127.0.0.1:0"),
            ("CONSUL_DNS_HTTP", "127.0.0.1:0"),
            ("CONSUL_DNS_UDP_WORKERS", "1"),
            ("CONSUL_DNS_RECURSOR", "none"),
        ]);
        let env = move |key: &str| vars.get(key).map(|v| (*v).to_owned());
        let config = config::load(None, Layer::default(), &env).unwrap();
        let reloader = Reloader { config_file: None, flags: Layer::default(), env: Box::new(env) };
        let daemon = start(config, reloader).await.unwrap();
        let http = daemon.http.unwrap();
        let ready = get(http, "/ready").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        let failures_before = task_failures(&get(http, "/metrics").await);

        backend::faults::panic_source();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ready = get(http, "/ready").await;
            if ready.starts_with("HTTP/1.1 503") {
                assert!(ready.contains("source not running"), "{ready}");
                break;
            }
            assert!(Instant::now() < deadline, "/ready still answers after the source task died: {ready}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let (_control, events) = mpsc::channel(1);
        let served = tokio::time::timeout(Duration::from_secs(10), daemon.serve(events)).await;
        let error = served.expect("the daemon stops by itself").unwrap_err().to_string();
        assert!(error.contains("the source task panicked: fault injected by a test"), "{error}");
        assert_eq!(
            task_failures(&telemetry::metrics().render(Default::default(), std::time::SystemTime::now())),
            failures_before + 1
        );
        assert!(tokio::net::TcpStream::connect(http).await.is_err(), "the HTTP listener stopped too");
    }

    fn task_failures(metrics: &str) -> u64 {
        let line = metrics.lines().find(|l| l.starts_with("consul_dns_task_failures_total{task=\"source\"}")).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}
