//! `eddy-server`: Eddy's sync server (WebSocket sync on SQLite with JWT auth) and a native client.
//!
//! [`AppState::open`] loads the data directory, [`app`] builds the HTTP routes (testable without a
//! socket) and [`run`] serves them until a shutdown future resolves, then flushes and closes every
//! sync connection.

pub mod admin;
pub mod auth;
pub mod client;
pub mod config;
pub mod console;
pub mod error;
pub mod feed;
pub mod ingest;
pub mod socket;
pub mod storage;
pub mod sync;
pub mod web;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use eddy_core::schema::Schema;
use eddy_core::server::{ServerConfig, ServerEngine};
use eddy_core::store::Store;
use tokio::net::TcpListener;

use crate::admin::Replica;
use crate::auth::{AuthService, JwtAuth};
use crate::config::{AuthProviders, Limits};
use crate::error::ServerError;
use crate::feed::Feed;
use crate::ingest::IngestStats;
use crate::storage::{open_database, SqliteStorage};
use crate::sync::SyncHandle;

/// The header that carries the admin key.
pub const ADMIN_KEY_HEADER: &str = "x-eddy-admin-key";

/// Milliseconds since the Unix epoch: the server's one clock, fed to the sans-IO engines.
#[allow(clippy::disallowed_methods)] // The clippy ban is for eddy-core; drivers own the clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How a server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the database and the JWT secret live.
    pub data_dir: PathBuf,
    /// The schema the server enforces; `None` starts from an empty schema.
    pub schema: Option<Schema>,
    /// Whether clients may add collections and properties (always on without a schema).
    pub development_mode: bool,
    /// The lifetime of access tokens.
    pub access_token_ttl_ms: u64,
    /// The key for `/api/admin/*`; `None` generates one.
    pub admin_key: Option<String>,
    /// Enabled sign-in methods.
    pub auth: AuthProviders,
    /// Connection limits.
    pub limits: Limits,
    /// Where the built dev console is, served at `/console`.
    pub console_dir: PathBuf,
    /// Read and write permissions per collection (none: everyone reads and writes everything).
    pub roles: eddy_core::server::view::Roles,
    /// Static files served at `/` (the demo page), if any.
    pub www_dir: Option<PathBuf>,
    /// The built `eddy-sync` package, served at `/pkg/`, if any.
    pub pkg_dir: Option<PathBuf>,
}

impl Config {
    /// Defaults for `data_dir`: development mode, 30-minute tokens, a generated admin key, every
    /// sign-in method, the engine's default limits, the console in `console/dist`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            schema: None,
            development_mode: true,
            access_token_ttl_ms: auth::DEFAULT_ACCESS_TTL_MS,
            admin_key: None,
            auth: AuthProviders::default(),
            limits: Limits::default(),
            console_dir: PathBuf::from(console::DEFAULT_CONSOLE_DIR),
            roles: eddy_core::server::view::Roles::default(),
            www_dir: None,
            pkg_dir: None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    auth: AuthService,
    sync: SyncHandle,
    feed: Feed,
    development_mode: bool,
    roles: eddy_core::server::view::Roles,
    console_dir: PathBuf,
    admin_key: String,
    providers: AuthProviders,
    replica: Arc<std::sync::Mutex<Replica>>,
    ingest: Arc<IngestStats>,
    www_dir: Option<PathBuf>,
    pkg_dir: Option<PathBuf>,
}

/// Everything the handlers share; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    /// Opens the data directory, loads the history into the engine and starts the engine thread.
    pub fn open(config: Config) -> Result<Self, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ServerError::Internal(format!(
                "cannot create the data directory \"{}\": {e}",
                config.data_dir.display()
            ))
        })?;
        let secret = auth::load_or_create_secret(&config.data_dir)?;
        let jwt = JwtAuth::new(&secret, config.access_token_ttl_ms);
        let storage = SqliteStorage::open(&config.data_dir)?;
        let schema_copy = config.data_dir.join(admin::SCHEMA_FILE);
        match &config.schema {
            Some(schema) => std::fs::write(
                &schema_copy,
                eddy_core::schema_json::schema_to_json(schema).to_string(),
            ),
            None => std::fs::remove_file(&schema_copy).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }),
        }
        .map_err(|e| {
            ServerError::Internal(format!(
                "cannot keep the schema copy \"{}\": {e}",
                schema_copy.display()
            ))
        })?;
        let schema = config.schema.unwrap_or_default();
        let replica = Replica::new(schema.clone());
        let mut engine_config = ServerConfig::new(schema, rand::random());
        engine_config.development_mode =
            config.development_mode || engine_config.schema.collections.is_empty();
        let development_mode = engine_config.development_mode;
        engine_config.idle_timeout_ms = config.limits.idle_timeout_ms;
        engine_config.history_cache_bytes = config.limits.history_cache_bytes;
        engine_config.max_sessions_per_connection = config.limits.max_sessions_per_connection;
        engine_config.message_limits.max_message_bytes = config.limits.max_message_bytes;
        // The console's changeset timeline shows instructions and merge decisions.
        engine_config.record_merge_decisions = true;
        engine_config.roles = config.roles.clone();
        let limits = engine_config.message_limits.clone();
        let engine = ServerEngine::new(engine_config, storage, jwt.clone())?;
        let feed = Feed::start(limits.clone()).map_err(|e| {
            ServerError::Internal(format!("cannot start the admin event feed: {e}"))
        })?;
        let ingest = Arc::new(IngestStats::default());
        ingest.restore(engine.ingest_statuses());
        let sync = SyncHandle::start(engine, limits, feed.sender(), Arc::clone(&ingest))?;
        let auth = AuthService::new(open_database(&config.data_dir)?, jwt);
        let admin_key = config
            .admin_key
            .unwrap_or_else(|| auth::hex(&rand::random::<[u8; 16]>()));
        Ok(AppState {
            inner: Arc::new(Inner {
                auth,
                sync,
                feed,
                development_mode,
                roles: config.roles.clone(),
                console_dir: config.console_dir,
                admin_key,
                providers: config.auth,
                replica: Arc::new(std::sync::Mutex::new(replica)),
                ingest,
                www_dir: config.www_dir,
                pkg_dir: config.pkg_dir,
            }),
        })
    }

    /// The auth service.
    pub fn auth(&self) -> &AuthService {
        &self.inner.auth
    }

    /// The engine handle.
    pub fn sync(&self) -> &SyncHandle {
        &self.inner.sync
    }

    /// The Data Ingest figures.
    pub fn ingest(&self) -> &IngestStats {
        &self.inner.ingest
    }

    /// Whether clients may add collections and properties.
    pub fn development_mode(&self) -> bool {
        self.inner.development_mode
    }

    /// The role permissions the server enforces.
    pub fn roles(&self) -> &eddy_core::server::view::Roles {
        &self.inner.roles
    }

    /// The admin event feed.
    pub fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// The admin key for `/api/admin/*`.
    pub fn admin_key(&self) -> &str {
        &self.inner.admin_key
    }

    /// Brings the read-only replica up to the committed history and runs `f` on it, on a
    /// blocking thread.
    pub async fn with_replica<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ServerError> + Send + 'static,
    ) -> Result<T, ServerError> {
        self.with_replica_and_db(move |store, _| f(store)).await
    }

    /// Like [`AppState::with_replica`], also handing `f` the database (for what the replica does
    /// not hold, such as ingested objects).
    pub async fn with_replica_and_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store, &rusqlite::Connection) -> Result<T, ServerError> + Send + 'static,
    ) -> Result<T, ServerError> {
        let replica = Arc::clone(&self.inner.replica);
        self.auth()
            .with_db(move |conn| {
                let mut replica = replica.lock().map_err(|_| {
                    ServerError::Internal("the admin replica lock is poisoned".into())
                })?;
                replica.catch_up(conn)?;
                f(replica.store(), conn)
            })
            .await
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Refuses the sign-in routes of disabled methods with 403.
async fn providers_enabled(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let providers = state.inner.providers;
    let refused = match request.uri().path() {
        "/api/auth/anonymous" if !providers.anonymous => Some("anonymous"),
        "/api/auth/register" | "/api/auth/login" if !providers.email_password => {
            Some("email/password")
        }
        _ => None,
    };
    match refused {
        Some(method) => ServerError::Forbidden(format!(
            "{method} sign-in is disabled in this app's config; enable it under [auth]"
        ))
        .into_response(),
        None => next.run(request).await,
    }
}

/// The HTTP routes: health, auth, admin, the sync WebSocket and the static directories.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/api/health", get(health))
        .route("/api/admin/events", get(feed::events_endpoint))
        .merge(console::routes(&state.inner.console_dir))
        .merge(auth::routes())
        .layer(web::cors())
        .route("/api/sync", get(sync::sync_endpoint))
        .merge(admin::routes());
    web::static_files(
        router,
        state.inner.www_dir.as_deref(),
        state.inner.pkg_dir.as_deref(),
    )
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        providers_enabled,
    ))
    .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops the engine (which flushes
/// and closes every sync connection) and waits for it.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let stopping = state.clone();
    let app = app(state.clone()).into_make_service_with_connect_info::<socket::Peer>();
    axum::serve(socket::EddyListener::new(listener), app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            stopping.sync().stop().await;
        })
        .await?;
    state.sync().stop().await;
    state.sync().join().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn call(app: Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    fn post(uri: &str, body: serde_json::Value) -> Request<Body> {
        Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn auth_flow_without_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::open(Config::new(dir.path())).unwrap();
        let app = app(state.clone());
        let (status, _) = call(
            app.clone(),
            Request::get("/api/health").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        let creds = serde_json::json!({"email": "a@example.com", "password": "correct horse"});
        let (status, tokens) = call(app.clone(), post("/api/auth/register", creds.clone())).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = call(app.clone(), post("/api/auth/register", creds.clone())).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"], "conflict");
        let (status, login) = call(app.clone(), post("/api/auth/login", creds)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(login["user_id"], tokens["user_id"]);
        let expires_in = login["expires_in"].as_u64().unwrap();
        assert!(
            (30 * 60 - 1..=30 * 60).contains(&expires_in),
            "the default access token lifetime, less the part of a second exp drops: {login}"
        );
        let wrong = serde_json::json!({"email": "a@example.com", "password": "wrong horse"});
        let (status, _) = call(app.clone(), post("/api/auth/login", wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let refresh = serde_json::json!({"refresh_token": login["refresh_token"]});
        let (status, again) = call(app.clone(), post("/api/auth/refresh", refresh.clone())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["user_id"], tokens["user_id"]);
        assert!(again["expires_in"]
            .as_u64()
            .is_some_and(|s| s >= 30 * 60 - 1));
        let (status, _) = call(app.clone(), post("/api/auth/logout", refresh.clone())).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = call(app.clone(), post("/api/auth/refresh", refresh)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["message"].as_str().unwrap().contains("revoked"));

        let (status, body) = call(
            app.clone(),
            Request::post("/api/auth/login")
                .header("content-type", "application/json")
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "bad_request");

        let (status, anon) = call(
            app.clone(),
            post("/api/auth/anonymous", serde_json::json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(anon["user_id"].as_str().unwrap().starts_with("anon-"));

        let (status, _) = call(
            app.clone(),
            Request::get("/api/admin/history-count")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = call(
            app.clone(),
            Request::get("/api/admin/history-count")
                .header(ADMIN_KEY_HEADER, state.admin_key())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["count"], 0);

        let (status, body) =
            call(app, Request::get("/api/sync").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"].as_str().unwrap().contains("eddy-sync/5"));

        state.sync().stop().await;
        state.sync().join().await.unwrap();
    }
}
