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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::{app, AppState, Config};

    #[tokio::test]
    async fn auth_allows_other_origins_and_static_dirs_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(www.join("index.html"), "<h1>demo</h1>").unwrap();
        std::fs::write(pkg.join("eddy_sync.js"), "export {};").unwrap();
        let mut config = Config::new(dir.path().join("data"));
        config.www_dir = Some(www);
        config.pkg_dir = Some(pkg);
        let state = AppState::open(config).unwrap();
        let router = app(state.clone());

        let preflight = Request::builder()
            .method("OPTIONS")
            .uri("/api/auth/login")
            .header("origin", "http://localhost:9000")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(preflight).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "*",
            "browser apps on other origins must be able to sign in"
        );

        for (uri, body) in [("/", "<h1>demo</h1>"), ("/pkg/eddy_sync.js", "export {};")] {
            let request = Request::get(uri).body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            assert_eq!(bytes, body.as_bytes(), "{uri}");
        }
        let missing = Request::get("/nothing-here").body(Body::empty()).unwrap();
        let response = router.oneshot(missing).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);

        state.sync().stop().await;
        state.sync().join().await.unwrap();
    }
}
