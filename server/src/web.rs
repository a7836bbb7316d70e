//! The browser side of the server: CORS for the auth and health routes (browser apps served from
//! another origin sign in with bearer tokens in JSON bodies, never cookies), and static files:
//! `/` from the demo directory (`www/`) and `/pkg/` from the built `eddy-sync` package.

use std::path::Path;

use axum::http::{header, Method};
use axum::Router;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;

use crate::AppState;

/// Any origin may call the routes this wraps, with JSON bodies and no credentials.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
}

/// Adds the static directories that are configured to `router`.
pub fn static_files(
    router: Router<AppState>,
    www: Option<&Path>,
    pkg: Option<&Path>,
) -> Router<AppState> {
    let router = match pkg {
        Some(dir) => router.nest_service("/pkg", ServeDir::new(dir)),
        None => router,
    };
    match www {
        Some(dir) => router.fallback_service(ServeDir::new(dir)),
        None => router,
    }
}
