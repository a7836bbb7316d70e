//! What the dev console needs from the server besides the event feed: the built console itself at
//! `/console`, and admin endpoints for the schema, for one document's changeset history and for
//! one committed changeset by its server version (for changesets older than the feed's ring).
//!
//! The console is a static wasm app built by `./dev` into a directory (`console/dist` by
//! default; `--console-dir` changes it). When that directory holds no `index.html`, `/console`
//! answers with a page that says how to build it.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use eddy_core::changeset::{decode_changeset, DecodeLimits, Instruction, Path as FieldPath};
use eddy_core::value::{parse_ejson, PrimaryKey};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tower_http::services::ServeDir;

use crate::admin::check_admin_key;
use crate::error::ServerError;
use crate::AppState;

/// The default directory of the built console, relative to the working directory.
pub const DEFAULT_CONSOLE_DIR: &str = "console/dist";
/// The most history entries one document history answer holds (the newest ones).
pub const MAX_DOCUMENT_HISTORY: usize = 500;

/// The query of `GET /api/admin/collections/{name}/history`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// The object's primary key as EJSON text (`5`, `"abc"`, `{"$oid":"..."}`).
    pub key: String,
}

/// One committed changeset of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DocumentChangeset {
    /// Its server version.
    pub server_version: u64,
    /// The client file it came from (0 for the server).
    pub origin_file_ident: u64,
    /// The user that client file belongs to, when the server knows the file.
    pub user: Option<String>,
    /// Its client version.
    pub client_version: u64,
    /// Milliseconds since the Unix epoch on the origin's clock.
    pub origin_timestamp: u64,
    /// The size of its body as stored (compressed when that was smaller).
    pub size: u64,
    /// The size of its body uncompressed.
    pub original_size: u64,
    /// The whole changeset body as stored (base64), for the console to decode.
    pub body: String,
}

/// The columns every history answer reads, in [`history_row`]'s order.
const HISTORY_COLUMNS: &str = "h.server_version, h.origin_file_ident, f.user_id, h.client_version,
     h.origin_timestamp, h.original_size, h.body
     FROM history h LEFT JOIN client_files f ON f.ident = h.origin_file_ident";

/// One row of [`HISTORY_COLUMNS`], with its body decoded.
fn history_row(
    row: &rusqlite::Row<'_>,
) -> Result<(DocumentChangeset, Vec<Instruction>), ServerError> {
    let server_version = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
    let body: Vec<u8> = row.get(6)?;
    let instructions = decode_changeset(&body, &DecodeLimits::default()).map_err(|e| {
        ServerError::Storage(format!(
            "history entry {server_version} does not decode: {e}"
        ))
    })?;
    let changeset = DocumentChangeset {
        server_version,
        origin_file_ident: u64::from_ne_bytes(row.get::<_, i64>(1)?.to_ne_bytes()),
        user: row.get(2)?,
        client_version: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        origin_timestamp: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        size: u64::try_from(body.len()).unwrap_or(u64::MAX),
        original_size: u64::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
        body: BASE64.encode(&body),
    };
    Ok((changeset, instructions))
}

/// What the server enforces: the schema, whether clients may change it, and permissions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemaInfo {
    /// The schema in Eddy's schema JSON (as `--schema` takes it).
    pub schema: serde_json::Value,
    /// Whether clients may add collections and properties.
    pub development_mode: bool,
    /// The role permissions enforced: `{ collection, read, write }` with the filters as written.
    pub roles: Vec<serde_json::Value>,
    /// A note on what `roles` means.
    pub roles_note: &'static str,
}

fn touches(instruction: &Instruction, collection: &str, key: &PrimaryKey) -> bool {
    let on = |c: &str, k: &PrimaryKey| c == collection && k == key;
    let path = |p: &FieldPath| on(&p.collection, &p.key);
    match instruction {
        Instruction::CreateObject {
            collection: c,
            key: k,
        }
        | Instruction::EraseObject {
            collection: c,
            key: k,
        } => on(c, k),
        Instruction::Set { path: p, .. }
        | Instruction::AddInteger { path: p, .. }
        | Instruction::Clear { path: p } => path(p),
        Instruction::ListInsert { list, .. }
        | Instruction::ListSet { list, .. }
        | Instruction::ListMove { list, .. }
        | Instruction::ListErase { list, .. } => path(list),
        Instruction::SetInsert { set, .. } | Instruction::SetErase { set, .. } => path(set),
        Instruction::DictErase { dict, .. } => path(dict),
        _ => false,
    }
}

/// The newest [`MAX_DOCUMENT_HISTORY`] committed changesets that touched `collection[key]`,
/// oldest first.
pub fn document_history(
    conn: &Connection,
    collection: &str,
    key: &PrimaryKey,
) -> Result<Vec<DocumentChangeset>, ServerError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {HISTORY_COLUMNS} ORDER BY h.server_version"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = std::collections::VecDeque::new();
    while let Some(row) = rows.next()? {
        let (changeset, instructions) = history_row(row)?;
        if !instructions.iter().any(|i| touches(i, collection, key)) {
            continue;
        }
        if out.len() == MAX_DOCUMENT_HISTORY {
            out.pop_front();
        }
        out.push_back(changeset);
    }
    Ok(out.into())
}

/// The committed changeset at `version`, or [`ServerError::NotFound`] when the history has none.
pub fn stored_changeset(conn: &Connection, version: u64) -> Result<DocumentChangeset, ServerError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {HISTORY_COLUMNS} WHERE h.server_version = ?1"
    ))?;
    let mut rows = stmt.query([i64::try_from(version).unwrap_or(i64::MAX)])?;
    match rows.next()? {
        Some(row) => history_row(row).map(|(changeset, _)| changeset),
        None => Err(ServerError::NotFound(format!(
            "the history holds no changeset at server version {version}; versions start at 1 and end at the latest committed one"
        ))),
    }
}

async fn get_changeset(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(version): UrlPath<String>,
) -> Result<Json<DocumentChangeset>, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    let version: u64 = version.trim_start_matches('v').parse().map_err(|_| {
        ServerError::BadRequest(format!(
            "\"{version}\" is not a server version; pass a whole number such as 12"
        ))
    })?;
    state
        .auth()
        .with_db(move |conn| stored_changeset(conn, version))
        .await
        .map(Json)
}

async fn get_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<DocumentChangeset>>, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    let Query(query) = query
        .map_err(|e| ServerError::BadRequest(format!("{e}; pass the primary key as ?key=EJSON")))?;
    let key = parse_ejson(&query.key)
        .ok()
        .and_then(|v| PrimaryKey::try_from(v).ok())
        .ok_or_else(|| {
            ServerError::BadRequest(format!(
                "key=\"{}\" is not a primary key in EJSON; pass it as the documents list shows it",
                query.key
            ))
        })?;
    state
        .auth()
        .with_db(move |conn| document_history(conn, &name, &key))
        .await
        .map(Json)
}

async fn get_schema(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SchemaInfo>, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    let development_mode = state.development_mode();
    let roles: Vec<serde_json::Value> = state
        .roles()
        .collections
        .iter()
        .map(|(collection, rules)| {
            serde_json::json!({
                "collection": collection,
                "read": rules.read.to_json(),
                "write": rules.write.to_json(),
            })
        })
        .collect();
    let roles_note = if roles.is_empty() {
        "no [roles] in the app config: every signed-in user may read and write every object"
    } else {
        "read filters decide which objects reach each user's devices; a write outside the write \
         filter is undone on the writer (error 232); collections without rules are open to all"
    };
    state
        .with_replica(move |store| {
            Ok(SchemaInfo {
                schema: eddy_core::schema_json::schema_to_json(store.schema()),
                development_mode,
                roles,
                roles_note,
            })
        })
        .await
        .map(Json)
}

/// The page `/console` shows when the console was not built.
async fn not_built(State(dir): State<PathBuf>) -> Response {
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>Eddy console not built</title>\
         <h1>The Eddy console was not built</h1>\
         <p>No <code>index.html</code> in <code>{}</code>. Start the server with \
         <code>./dev run</code>, which builds the console first, or pass \
         <code>--console-dir</code> to where it was built.</p>",
        html_escape(&dir.display().to_string())
    );
    (StatusCode::NOT_FOUND, Html(page)).into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The console's admin routes and `/console` itself, served from `dir`. The app's own URLs are
/// absolute (`/console/...`), so `/console` and `/console/` both serve its `index.html`.
pub fn routes(dir: &Path) -> Router<AppState> {
    let not_built = Router::new()
        .fallback(not_built)
        .with_state(dir.to_path_buf());
    let files = ServeDir::new(dir)
        .append_index_html_on_directories(true)
        .fallback(not_built);
    Router::new()
        .route("/api/admin/schema", get(get_schema))
        .route("/api/admin/collections/{name}/history", get(get_history))
        .route("/api/admin/changesets/{version}", get(get_changeset))
        .nest_service("/console", files)
}
