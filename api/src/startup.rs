//! Building the application (database, writers, router) and running it.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::bus::Bus;
use crate::config::Config;
use crate::db::Db;
use crate::graphql::ws::Sockets;
use crate::ingest::Ingestor;
use crate::metrics::{Gauges, Metrics};
use crate::{dashboard, graphql, requests, webhook};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub ingestor: Ingestor,
    /// Committed deliveries, fanned out to this process's subscriptions.
    pub bus: Bus,
    /// Open WebSockets, closed with 1001 on shutdown.
    pub sockets: Sockets,
    pub metrics: Metrics,
}

/// A built application: migrated database, running writers, bound listener.
pub struct Application {
    listener: TcpListener,
    router: Router,
    writers: Vec<JoinHandle<()>>,
    pub state: AppState,
}

impl Application {
    /// Open and migrate the database, start the writers and bind the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let writers = config.writers();
        graphql::http::cors_layer(&config.cors_origins).map_err(anyhow::Error::msg)?;
        graphql::host::AllowedHosts::parse(&config.allowed_hosts).map_err(anyhow::Error::msg)?;
        let db = Db::connect(&config, writers).await?;
        db.migrate().await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}: is another server using it? Choose another with --listen or CALLTRAIL_LISTEN", config.listen))?;
        if config.webhook_secrets.is_none() {
            tracing::warn!(
                "CALLTRAIL_WEBHOOK_SECRETS is not set: unsigned webhook deliveries are accepted"
            );
        }
        let bus = Bus::start(db.read.clone(), config.subscription_buffer).await?;
        let metrics = Metrics::new();
        let (ingestor, writers) = Ingestor::start_publishing(
            db.write.clone(),
            writers,
            config.ingest_batch,
            config.ingest_queue,
            config.write_lock_timeout,
            bus.publisher(),
            metrics.ingest(),
        )
        .await?;
        let state = AppState {
            config: Arc::new(config),
            db,
            ingestor,
            bus,
            sockets: Sockets::default(),
            metrics,
        };
        Ok(Self {
            listener,
            router: router(state.clone()),
            writers,
            state,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until SIGINT or SIGTERM; then stop accepting, finish in-flight
    /// requests (each delivery answered only after its commit) for at most
    /// `CALLTRAIL_SHUTDOWN_TIMEOUT`, commit what the writers hold, and
    /// return. A second signal exits at once.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "calltrail listening");
        let sockets = self.state.sockets.clone();
        let closing = sockets.clone();
        let config = self.state.config.clone();
        crate::serve::serve(
            self.listener,
            self.router,
            async move {
                shutdown_signal().await;
                tracing::info!("shutting down: finishing in-flight deliveries");
                tokio::spawn(async {
                    let code = shutdown_signal().await;
                    tracing::warn!("second signal: exiting without finishing in-flight deliveries (none was answered before its commit)");
                    std::process::exit(code);
                });
                // Upgraded connections are not the server's to drain: close them (1001).
                tokio::spawn(async move { closing.close_all(SOCKET_GRACE).await });
            },
            crate::serve::Limits {
                header_timeout: config.client_timeout,
                drain: config.shutdown_timeout,
                max_connections: config.max_connections,
            },
            &self.state.ingestor,
        )
        .await;
        sockets.close_all(SOCKET_GRACE).await;
        drop(self.state);
        for writer in self.writers {
            let _ = writer.await;
        }
        Ok(())
    }
}

/// How long shutdown waits for WebSockets to take their close frame.
const SOCKET_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/webhooks/call-events",
            post(webhook::receive).fallback(webhook::wrong_method),
        )
        .merge(graphql::http::routes(&state))
        .merge(dashboard::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(requests::log))
        .with_state(state)
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let (mut pool_idle, mut pool_size) = (0, 0);
    for conn in [&app.db.write, &app.db.read] {
        let (idle, size) = match conn.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                let pool = conn.get_postgres_connection_pool();
                (pool.num_idle(), pool.size() as usize)
            }
            _ => {
                let pool = conn.get_sqlite_connection_pool();
                (pool.num_idle(), pool.size() as usize)
            }
        };
        pool_idle += idle;
        pool_size += size;
    }
    let gauges = Gauges {
        subscriptions: app.bus.active(),
        pool_idle,
        pool_in_use: pool_size.saturating_sub(pool_idle),
        queue_depth: app.ingestor.queue_depth(),
        last_stored_at: app.ingestor.last_stored_at(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(&gauges),
    )
}

async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    match app.db.ready().await {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM; returns the exit code a process
/// stopped by it has (128 + its number).
async fn shutdown_signal() -> i32 {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => 130, _ = terminate => 143 }
}
