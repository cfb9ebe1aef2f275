//! The application: [`Application::build`] does every fallible step of
//! start-up (database, migrations, HMAC key, bind) and
//! [`Application::run_until_stopped`] serves until its shutdown future
//! completes, then drains, flushes and closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;

use latchkey_core::observe::Observe;

use crate::auth::AdminAuth;
use crate::cache::CacheConfig;
use crate::changes::Freshness;
use crate::clock::{Clock, SystemClock};
use crate::config::{ServerSettings, Settings};
use crate::console::ConsoleSessions;
use crate::grpc::{self, AdminService, ExtAuthzService, GrpcService, SelfService, VerifyService};
use crate::lifecycle::Lifecycle;
use crate::limits::Allowances;
use crate::lookups::LookupLimit;
use crate::metrics::Metrics;
use crate::serve::{self, Listener, Protocol, Stop};
use crate::setup::{lifecycle_settings, open_store, resolve_hmac_keys};
use crate::store::Store;
use crate::tasks::change_feed::ChangeFeed;
use crate::tasks::expiry_warnings::ExpiryWarnings;
use crate::tasks::last_used::LastUsedFlusher;
use crate::tasks::warm_up::WarmUp;
use crate::tls::{Flavor, ReloadingTls};
use crate::usage::{LastUsed, Rekeys};
use crate::verifier::{MissHook, Verifier};
use crate::watch::Watching;

/// What tests and embedders may swap in.
#[derive(Clone)]
pub struct Options {
    pub clock: Arc<dyn Clock>,
    /// See [`MissHook`].
    pub miss_hook: Option<MissHook>,
    /// Runs while warming the cache at start, between the read and the
    /// caching.
    pub warm_hook: Option<MissHook>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
            miss_hook: None,
            warm_hook: None,
        }
    }
}

/// A built server: bound, connected, migrated; not yet serving.
pub struct Application {
    ports: Ports,
    /// What serving reads: connection limits, timeouts, ext_authz and
    /// TokenReview settings, the flush interval.
    settings: Settings,
    metrics: Arc<Metrics>,
    store: Store,
    verifier: Arc<Verifier>,
    lifecycle: Arc<Lifecycle>,
    auth: Arc<AdminAuth>,
    /// The web console's sessions (served with the HTTP listener).
    console: Arc<ConsoleSessions>,
    last_used: Arc<LastUsed>,
    rekeys: Arc<Rekeys>,
    /// Usage credits taken and not yet spent: given back at a graceful stop.
    allowances: Arc<Allowances>,
    /// The configured keys' ids, the primary first.
    key_ids: Vec<String>,
    clock: Arc<dyn Clock>,
    change_feed: ChangeFeed,
    warm_up: WarmUp,
    watching: Arc<Watching>,
}

/// The bound ports, each with what it speaks and its TLS, and the address
/// it was bound to (useful with port 0).
struct Ports {
    grpc: (Listener, SocketAddr),
    metrics: (Listener, SocketAddr),
    /// If `http_addr` is set.
    http: Option<(Listener, SocketAddr)>,
}

impl Ports {
    /// Binds the configured ports, with TLS where it is configured.
    async fn bind(settings: &Settings) -> anyhow::Result<Ports> {
        let tls = |flavor, what: &str| {
            settings
                .tls
                .files()
                .map(|files| ReloadingTls::new(files, flavor))
                .transpose()
                .with_context(|| format!("loading TLS{what} (LATCHKEY_TLS__*)"))
        };
        let grpc_tls = tls(Flavor::Grpc, "")?;
        let grpc = bind(
            settings.listen_addr,
            "LATCHKEY_LISTEN_ADDR",
            Protocol::Http2,
            grpc_tls,
        )
        .await?;
        let metrics = bind(
            settings.metrics_addr,
            "LATCHKEY_METRICS_ADDR",
            Protocol::Http1,
            None,
        )
        .await?;
        let http = match settings.http_addr {
            Some(addr) => {
                let http_tls = tls(Flavor::Http, " for the HTTP listener")?;
                Some(bind(addr, "LATCHKEY_HTTP_ADDR", Protocol::Http1, http_tls).await?)
            }
            None => None,
        };
        Ok(Ports {
            grpc,
            metrics,
            http,
        })
    }
}

/// Binds `addr` (the setting `variable`) for `protocol`.
async fn bind(
    addr: SocketAddr,
    variable: &str,
    protocol: Protocol,
    tls: Option<ReloadingTls>,
) -> anyhow::Result<(Listener, SocketAddr)> {
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} ({variable})"))?;
    let bound = tcp
        .local_addr()
        .with_context(|| format!("reading the address bound for {variable}"))?;
    Ok((Listener { tcp, protocol, tls }, bound))
}

impl Application {
    /// # Errors
    /// See [`Application::build_with`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Options::default()).await
    }

    /// # Errors
    /// If a setting is invalid, the HMAC key is missing where it is required,
    /// the database cannot be reached or migrated, or the address cannot be
    /// bound.
    pub async fn build_with(settings: Settings, options: Options) -> anyhow::Result<Self> {
        settings.validate()?;
        let prefix = settings.prefix()?;
        let store = open_store(&settings).await?;
        let keys = resolve_hmac_keys(&settings, &store).await?;
        let key = keys.primary().clone();
        tracing::info!(
            primary = key.id(),
            older = ?&keys.ids()[1..],
            "HMAC keys"
        );
        let clock = options.clock;
        let last_used = Arc::new(LastUsed::new());
        let rekeys = Arc::new(Rekeys::new());
        let metrics = Arc::new(Metrics::new());
        let freshness = Arc::new(Freshness::new(settings.changes.max_staleness));
        let allowances = Arc::new(Allowances::new(store.clone()));
        let verifier = Arc::new(
            Verifier::new(
                prefix.clone(),
                keys.clone(),
                CacheConfig {
                    capacity: settings.cache.capacity,
                    ttl: settings.cache.ttl,
                    negative_ttl: settings.cache.negative_ttl,
                },
                store.clone(),
                Arc::clone(&last_used),
                Arc::clone(&clock),
                grpc::render_token,
            )
            .with_freshness(Arc::clone(&freshness))
            .with_rekeys(Arc::clone(&rekeys))
            .with_observer(Arc::clone(&metrics) as Arc<dyn Observe>)
            .with_lookup_limit(LookupLimit::new(
                settings.lookups.max_pending,
                settings.lookups.max_per_second,
            ))
            .with_miss_hook(options.miss_hook)
            .with_allowances(Arc::clone(&allowances)),
        );
        let lifecycle = Arc::new(Lifecycle::new(
            store.clone(),
            Arc::clone(&verifier) as Arc<dyn latchkey_service::verifier::Invalidate>,
            Arc::clone(&clock),
            lifecycle_settings(&settings, key.clone(), prefix),
        ));
        let static_admin = settings.admin_token.as_ref().map(|t| t.expose());
        if static_admin.is_none() {
            tracing::info!(
                "LATCHKEY_ADMIN_TOKEN is unset: TokenAdmin takes tokens with scope latchkey:admin; \
                 `latchkey admin-token issue` prints a new one (run it where this server's \
                 configuration and database are reachable)"
            );
        }
        let auth = Arc::new(AdminAuth::new(
            key.clone(),
            static_admin,
            Arc::clone(&verifier),
        ));
        let console = Arc::new(ConsoleSessions::new(
            store.clone(),
            key,
            Arc::clone(&auth),
            Arc::clone(&clock),
            settings.console.session_ttl,
        ));
        let ports = Ports::bind(&settings).await?;
        let (read_done, log_read) = tokio::sync::watch::channel(None);
        let wake = Arc::new(tokio::sync::Notify::new());
        let warm_up = WarmUp {
            verifier: Arc::clone(&verifier),
            clock: Arc::clone(&clock),
            window: settings.cache.warm_window,
            timeout: settings.cache.warm_timeout,
            metrics: Arc::clone(&metrics),
            paused: options.warm_hook,
            feed_read: log_read.clone(),
            wake_feed: Arc::clone(&wake),
            done: tokio::sync::watch::Sender::new(false),
        };
        let watching = Arc::new(Watching::new(store.clone(), Arc::clone(&clock), log_read));
        let change_feed = ChangeFeed {
            store: store.clone(),
            verifier: Arc::clone(&verifier),
            clock: Arc::clone(&clock),
            poll_interval: settings.changes.poll_interval,
            listen_url: (store.is_postgres() && settings.changes.listen)
                .then(|| settings.database_url.clone()),
            retention: settings.changes.retention,
            freshness,
            read_done,
            wake,
            metrics: Arc::clone(&metrics),
        };
        Ok(Application {
            ports,
            metrics,
            store,
            verifier,
            lifecycle,
            auth,
            console,
            last_used,
            rekeys,
            allowances,
            key_ids: keys.ids(),
            clock,
            change_feed,
            warm_up,
            watching,
            settings,
        })
    }

    /// The metrics address actually bound.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.ports.metrics.1
    }

    /// The HTTP address actually bound, if `http_addr` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.ports.http.as_ref().map(|(_, addr)| *addr)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.ports.grpc.1
    }

    /// Serves until `shutdown` completes (or a critical task fails), then:
    /// health NOT_SERVING, stop accepting, let in-flight calls finish within
    /// `shutdown.drain_timeout`, flush last-used times, close the pool.
    ///
    /// # Errors
    /// If the server fails, or a critical background task stopped early.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            ports,
            settings,
            metrics,
            store,
            verifier,
            lifecycle,
            auth,
            console,
            last_used,
            rekeys,
            allowances,
            key_ids,
            clock,
            change_feed,
            warm_up,
            watching,
        } = self;
        let (limits, drain_timeout) = (settings.server, settings.shutdown.drain_timeout);

        let tasks = TaskTracker::new();
        let stop_tasks = CancellationToken::new();
        let stop_serving = CancellationToken::new();
        let failed = CancellationToken::new();
        let flusher = LastUsedFlusher {
            store: store.clone(),
            last_used,
            interval: settings.last_used.flush_interval,
            rekeys,
            primary_key_id: key_ids[0].clone(),
            metrics: Arc::clone(&metrics),
            clock: Arc::clone(&clock),
            pruned_day: std::sync::atomic::AtomicI64::new(0),
        };
        spawn_critical(
            &tasks,
            "the last-used flusher",
            flusher.run(stop_tasks.clone()),
            &stop_tasks,
            &failed,
        );
        let warnings = ExpiryWarnings {
            lifecycle: Arc::clone(&lifecycle),
            leads: settings.notifications.expiry_warnings.clone(),
            interval: settings.notifications.check_interval,
        };
        spawn_critical(
            &tasks,
            "the expiry warnings",
            warnings.run(stop_tasks.clone()),
            &stop_tasks,
            &failed,
        );
        let (freshness, poll_interval) = (
            Arc::clone(&change_feed.freshness),
            change_feed.poll_interval,
        );
        spawn_critical(
            &tasks,
            "the change feed",
            change_feed.run(stop_tasks.clone()),
            &stop_tasks,
            &failed,
        );

        let warmed = warm_up.done.subscribe();
        tasks.spawn(warm_up.run(stop_tasks.clone()));

        let (health, health_service) = tonic_health::server::health_reporter();
        // Alive at once; ready once the cache is warm.
        crate::readiness::set_health(&health, ServingStatus::Serving, ServingStatus::NotServing)
            .await;
        let draining = CancellationToken::new();
        let health_follower = tokio::spawn(crate::readiness::follow(
            freshness,
            warmed,
            health.clone(),
            poll_interval,
            draining.clone(),
        ));
        {
            let (metrics, verifier, stop) = (
                Arc::clone(&metrics),
                Arc::clone(&verifier),
                stop_tasks.clone(),
            );
            let refresh = {
                let metrics = Arc::clone(&metrics);
                move || {
                    let entries = i64::try_from(verifier.cache_entries()).unwrap_or(i64::MAX);
                    metrics.cache_entries.set(entries);
                }
            };
            let (listener, addr) = ports.metrics;
            tracing::info!(%addr, "metrics on /metrics");
            let router = crate::metrics::router(metrics, refresh);
            spawn_critical(
                &tasks,
                "the metrics listener",
                serve_http(
                    listener,
                    hyper_util::service::TowerToHyperService::new(router),
                    limits,
                    stop.clone(),
                    drain_timeout,
                ),
                &stop,
                &failed,
            );
        }
        // Console links point at `console.public_url`, or else this
        // listener's own address.
        let console_links = ports.http.as_ref().map(|(listener, addr)| {
            let base = settings.console.public_url.clone().unwrap_or_else(|| {
                let scheme = if listener.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{addr}")
            });
            (Arc::clone(&console), base)
        });
        if let Some((listener, addr)) = ports.http {
            let api = Arc::new(
                crate::web::WebApi::new(
                    Arc::clone(&verifier),
                    Arc::clone(&metrics) as Arc<dyn Observe>,
                    settings.token_review.clone(),
                )
                .with_console(crate::web::Console {
                    sessions: console,
                    lifecycle: Arc::clone(&lifecycle),
                    secure: listener.tls.is_some(),
                    expiry_presets: settings.console.expiry_presets.clone(),
                    scopes: settings
                        .console
                        .scopes
                        .iter()
                        .map(|s| (s.name.clone(), s.description.clone()))
                        .collect(),
                    frame_ancestors: settings.console.frame_ancestors.join(" "),
                    key_ids: key_ids.clone(),
                })
                .with_leaks(
                    crate::web::Leaks::new(Arc::clone(&lifecycle), &settings.leaks)
                        .map_err(|why| anyhow::anyhow!(why))?,
                ),
            );
            tracing::info!(%addr, "HTTP on /oauth2/introspect, /apis/authentication.k8s.io/v1/tokenreviews, /console/, /v1/tokens/revoke{}",
                if settings.leaks.github_public_keys.is_empty() { "" } else { " and /leaks/github" });
            if let Some(tls) = &listener.tls {
                tasks.spawn(tls.clone().watch(stop_tasks.clone()));
            }
            let service = crate::web::WebService::new(api, limits.request_timeout);
            spawn_critical(
                &tasks,
                "the HTTP listener",
                serve_http(
                    listener,
                    service,
                    limits,
                    stop_serving.clone(),
                    drain_timeout,
                ),
                &stop_serving,
                &failed,
            );
        }
        // On the stop signal (or a critical task's failure): health
        // NOT_SERVING, then the gRPC and HTTP listeners stop accepting and
        // drain.
        let stop_watcher = tokio::spawn({
            let (failed, stop_serving) = (failed.clone(), stop_serving.clone());
            async move {
                tokio::select! {
                    () = shutdown => tracing::info!("stop signal received; draining"),
                    () = failed.cancelled() => {}
                }
                draining.cancel();
                let _ = health_follower.await;
                let not = ServingStatus::NotServing;
                crate::readiness::set_health(&health, not, not).await;
                stop_serving.cancel();
            }
        });
        let observer = Arc::clone(&metrics) as Arc<dyn Observe>;
        let ext_authz = Arc::new(
            ExtAuthzService::new(
                verifier.clone(),
                Arc::clone(&observer),
                settings.ext_authz.remove_authorization,
            )
            .with_forwarded_for(settings.ext_authz.trust_forwarded_for),
        );
        let routes = grpc::routes(grpc::Services {
            admin: {
                let watchers = grpc::Watchers {
                    watching,
                    stop: stop_serving.clone(),
                };
                let admin = AdminService::new(
                    lifecycle.clone(),
                    auth,
                    watchers,
                    Arc::clone(&clock),
                    key_ids,
                );
                match console_links {
                    Some((sessions, base)) => admin.with_console_links(sessions, base),
                    None => admin,
                }
            },
            token_self: SelfService::new(lifecycle, Arc::clone(&verifier), Arc::clone(&clock)),
            verify: VerifyService::new(Arc::clone(&verifier), Arc::clone(&observer)),
            ext_authz: Arc::clone(&ext_authz),
        })
        .context("building the reflection service")?
        .add_service(health_service);
        let grpc = GrpcService::new(
            routes,
            Arc::clone(&metrics) as Arc<dyn Observe>,
            limits.request_timeout,
        )
        .answering(grpc::CHECK_PATH, ext_authz);
        let (listener, addr) = ports.grpc;
        if let Some(tls) = &listener.tls {
            tasks.spawn(tls.clone().watch(stop_tasks.clone()));
        }
        tracing::info!(%addr, tls = listener.tls.is_some(), "latchkey listening");
        let stop = Stop {
            signal: stop_serving.clone(),
            drain: drain_timeout,
        };
        serve::serve(listener, grpc, limits, stop).await;
        let _ = stop_watcher.await;

        stop_tasks.cancel();
        tasks.close();
        tasks.wait().await;
        // Credits taken and not spent go back, for the other replicas.
        match allowances.give_back().await {
            Ok(0) => {}
            Ok(given) => tracing::info!(credits = given, "unspent credits given back"),
            Err(e) => tracing::warn!(error = %e, "giving unspent credits back"),
        }
        if let Err(e) = store.close().await {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(e)),
                "closing the database pool"
            );
        }
        tracing::info!("latchkey stopped");
        if failed.is_cancelled() {
            bail!("a critical background task stopped early");
        }
        Ok(())
    }
}

/// Runs a task the server cannot do without: if it ends before `stop`, or
/// panics, the server shuts down (`failed`).
fn spawn_critical(
    tasks: &TaskTracker,
    name: &'static str,
    task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    stop: &CancellationToken,
    failed: &CancellationToken,
) {
    let (stop, failed) = (stop.clone(), failed.clone());
    let task = tokio::spawn(task);
    tasks.spawn(async move {
        let result = task.await;
        if !stop.is_cancelled() || matches!(&result, Err(e) if e.is_panic()) {
            tracing::error!(?result, "{name} stopped early; shutting down");
            failed.cancel();
        }
    });
}

/// Serves `service` on `listener` until `stop`, draining for at most
/// `drain`.
async fn serve_http<S: serve::HttpService<B>, B: serve::ResponseBody>(
    listener: Listener,
    service: S,
    limits: ServerSettings,
    stop: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    let stop = Stop {
        signal: stop,
        drain,
    };
    serve::serve(listener, service, limits, stop).await;
    Ok(())
}
