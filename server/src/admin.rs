//! The admin API under `/api/admin/` (guarded by the `x-eddy-admin-key` header) and the
//! read-only [`Replica`] behind it and `eddy export`.
//!
//! The engine's state lives on its own thread, out of reach of HTTP handlers, so documents are
//! read from a replica that replays the committed `history` table of SQLite into an
//! `eddy_core::store::Store`, catching up incrementally on each request. It shows exactly what is
//! durable, and works the same while the server is stopped.

use std::path::Path;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use eddy_core::changeset::{decode_changeset, DecodeLimits};
use eddy_core::schema::{CollectionKind, Schema};
use eddy_core::store::{Changes, Store};
use eddy_core::value::{document_to_ejson, parse_ejson, EjsonMode, PrimaryKey};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::error::ServerError;
use crate::ingest::IngestReport;
use crate::storage::{history_summary, ingested_key, ingested_key_from_sql};
use crate::{AppState, ADMIN_KEY_HEADER};

/// The most documents one page may hold.
pub const MAX_PAGE: usize = 1000;
/// The page size when `limit` is absent.
pub const DEFAULT_PAGE: usize = 100;
/// The name of the schema copy `eddy serve` keeps in the data directory for `eddy export`.
pub const SCHEMA_FILE: &str = "schema.json";

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the admin key header: absent is 401, wrong is 403.
pub fn check_admin_key(headers: &HeaderMap, key: &str) -> Result<(), ServerError> {
    let Some(sent) = headers.get(ADMIN_KEY_HEADER) else {
        return Err(ServerError::Unauthorized(format!(
            "send the admin key printed at startup in the {ADMIN_KEY_HEADER} header"
        )));
    };
    if constant_time_eq(sent.as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ServerError::Forbidden(format!(
            "the {ADMIN_KEY_HEADER} header does not match the admin key printed at startup"
        )))
    }
}

/// A read-only copy of the server file, replayed from the committed history.
#[derive(Debug)]
pub struct Replica {
    store: Store,
    version: u64,
}

impl Replica {
    /// An empty replica enforcing `schema` (empty in development mode: the history adds to it).
    pub fn new(schema: Schema) -> Self {
        Replica {
            store: Store::new(schema),
            version: 0,
        }
    }

    /// The state as of the last catch-up.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies every committed history entry newer than the last one applied.
    pub fn catch_up(&mut self, conn: &Connection) -> Result<(), ServerError> {
        let mut stmt = conn.prepare(
            "SELECT server_version, body FROM history WHERE server_version > ?1
             ORDER BY server_version",
        )?;
        let after = i64::try_from(self.version).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after])?;
        let limits = DecodeLimits::default();
        while let Some(row) = rows.next()? {
            let version = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(u64::MAX);
            let body: Vec<u8> = row.get(1)?;
            let instructions = decode_changeset(&body, &limits).map_err(|e| {
                ServerError::Storage(format!("history entry {version} does not decode: {e}"))
            })?;
            self.store
                .apply(&instructions, &mut Changes::default())
                .map_err(|e| {
                    ServerError::Storage(format!("history entry {version} does not apply: {e}"))
                })?;
            self.version = version;
        }
        Ok(())
    }
}

/// Reads the schema `eddy serve` saved in `data_dir`, or an empty one (development mode).
pub fn saved_schema(data_dir: &Path) -> Result<Schema, ServerError> {
    let path = data_dir.join(SCHEMA_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => eddy_core::schema_json::schema_from_json(&text).map_err(|e| {
            ServerError::Internal(format!(
                "the saved schema \"{}\" is not valid: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Schema::default()),
        Err(e) => Err(ServerError::Internal(format!(
            "cannot read the saved schema \"{}\": {e}",
            path.display()
        ))),
    }
}

/// One collection in `GET /api/admin/collections`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// `top_level`, `embedded` or `asymmetric`.
    pub kind: &'static str,
    /// How many objects it holds.
    pub count: usize,
}

fn kind_name(kind: CollectionKind) -> &'static str {
    match kind {
        CollectionKind::TopLevel => "top_level",
        CollectionKind::Embedded => "embedded",
        CollectionKind::Asymmetric => "asymmetric",
        _ => "other",
    }
}

/// The collections of `store` with their object counts.
pub fn collections(store: &Store) -> Vec<CollectionInfo> {
    store
        .schema()
        .collections
        .values()
        .map(|c| CollectionInfo {
            name: c.name.clone(),
            kind: kind_name(c.kind),
            count: store.len(&c.name),
        })
        .collect()
}

/// The query of `GET collections/{name}/documents`.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// The most documents to return (1 to [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Return documents whose primary key sorts after this one (EJSON text, such as `5`,
    /// `"abc"` or `{"$oid":"..."}`; the `next` of the previous page).
    pub after: Option<String>,
}

/// One page of documents.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page {
    /// The documents in primary-key order, as relaxed EJSON.
    pub documents: Vec<serde_json::Value>,
    /// The `after` for the next page (relaxed EJSON text; percent-encode it in the URL), or
    /// null on the last page.
    pub next: Option<String>,
}

/// The page size a query asks for, checked.
fn page_limit(query: &PageQuery) -> Result<usize, ServerError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ServerError::BadRequest(format!(
            "limit={limit} is out of range; use 1 to {MAX_PAGE}"
        )));
    }
    Ok(limit)
}

/// The primary key an `after` parameter names.
fn after_key(text: &str) -> Result<PrimaryKey, ServerError> {
    parse_ejson(text)
        .ok()
        .and_then(|v| PrimaryKey::try_from(v).ok())
        .ok_or_else(|| {
            ServerError::BadRequest(format!(
                "after=\"{text}\" is not a primary key in EJSON; pass the next value of the previous page"
            ))
        })
}

/// A page of `collection` in `store`.
pub fn page(store: &Store, collection: &str, query: &PageQuery) -> Result<Page, ServerError> {
    if !store.schema().collections.contains_key(collection) {
        return Err(ServerError::BadRequest(format!(
            "there is no collection \"{collection}\"; GET /api/admin/collections lists them"
        )));
    }
    let limit = page_limit(query)?;
    let after = query.after.as_deref().map(after_key).transpose()?;
    let mut documents = Vec::new();
    let mut last = None;
    let mut more = false;
    for (key, doc) in store
        .objects(collection)
        .filter(|(key, _)| after.as_ref().is_none_or(|a| *key > a))
    {
        if documents.len() == limit {
            more = true;
            break;
        }
        documents.push(document_to_ejson(doc, EjsonMode::Relaxed));
        last = Some(key);
    }
    let next = match (more, last) {
        (true, Some(key)) => Some(
            eddy_core::value::Value::from(key.clone())
                .to_ejson(EjsonMode::Relaxed)
                .to_string(),
        ),
        _ => None,
    };
    Ok(Page { documents, next })
}

/// One user in `GET /api/admin/users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The user id (the `sub` of its tokens).
    pub id: String,
    /// `anonymous` or `email_password`.
    pub kind: &'static str,
    /// The email, for email/password users.
    pub email: Option<String>,
}

/// Every user, in id order.
pub fn users(conn: &Connection) -> Result<Vec<UserInfo>, ServerError> {
    let mut stmt = conn.prepare("SELECT id, email FROM users ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    rows.map(|row| {
        let (id, email) = row?;
        Ok(UserInfo {
            kind: if email.is_some() {
                "email_password"
            } else {
                "anonymous"
            },
            id,
            email,
        })
    })
    .collect()
}

/// One client file in `GET /api/admin/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientFileInfo {
    /// The client file ident the server allocated.
    pub client_file_ident: u64,
    /// The user it belongs to.
    pub user: String,
    /// How many changesets of it the history holds.
    pub changesets: u64,
    /// How many objects its flexible-sync view keeps a row for, as stored: objects held,
    /// owed a reset, or remembered for a reset sent (0 for a file that holds everything). Rows
    /// of erased objects and old resets go once the file's download cursor passes them.
    pub view_objects: u64,
}

/// Every client file the server allocated, with the user, how much it uploaded and the size of
/// its view.
pub fn client_files(conn: &Connection) -> Result<Vec<ClientFileInfo>, ServerError> {
    let mut stmt = conn.prepare(
        "SELECT f.ident, f.user_id,
            (SELECT COUNT(*) FROM history h WHERE h.origin_file_ident = f.ident),
            (SELECT COUNT(*) FROM client_view_objects v WHERE v.ident = f.ident)
         FROM client_files f ORDER BY f.ident",
    )?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let rows = stmt.query_map([], |r| {
        Ok(ClientFileInfo {
            client_file_ident: u64::from_ne_bytes(r.get::<_, i64>(0)?.to_ne_bytes()),
            user: r.get(1)?,
            changesets: count(r.get(2)?),
            view_objects: count(r.get(3)?),
        })
    })?;
    rows.collect::<Result<_, _>>().map_err(Into::into)
}

/// How many ingested objects an asymmetric collection holds.
pub fn ingested_count(conn: &Connection, collection: &str) -> Result<usize, ServerError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM ingested WHERE collection = ?1",
        [collection],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A page of an asymmetric collection's ingested documents, in primary key order (integer keys
/// by value, others by their canonical EJSON text; see `storage::ingested_key`).
pub fn ingested_page(
    conn: &Connection,
    collection: &str,
    query: &PageQuery,
) -> Result<Page, ServerError> {
    let limit = page_limit(query)?;
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let row = |r: &rusqlite::Row<'_>| Ok((r.get_ref(0)?.into(), r.get::<_, String>(1)?));
    let rows: Vec<(SqlValue, String)> = match &query.after {
        None => conn
            .prepare_cached(
                "SELECT pk, document FROM ingested WHERE collection = ?1 ORDER BY pk LIMIT ?2",
            )?
            .query_map(params![collection, fetch], row)?
            .collect::<Result<_, _>>()?,
        Some(text) => {
            let key = ingested_key(&after_key(text)?);
            let known = conn
                .prepare_cached("SELECT 1 FROM ingested WHERE collection = ?1 AND pk = ?2")?
                .exists(params![collection, key])?;
            if !known {
                return Err(ServerError::BadRequest(format!(
                    "after=\"{text}\" names no object of \"{collection}\"; pass the next value of the previous page"
                )));
            }
            conn.prepare_cached(
                "SELECT pk, document FROM ingested WHERE collection = ?1 AND pk > ?2
                 ORDER BY pk LIMIT ?3",
            )?
            .query_map(params![collection, key, fetch], row)?
            .collect::<Result<_, _>>()?
        }
    };
    let more = rows.len() > limit;
    let mut documents = Vec::with_capacity(limit);
    let mut last = None;
    for (pk, document) in rows.into_iter().take(limit) {
        let json: serde_json::Value = serde_json::from_str(&document).map_err(|e| {
            ServerError::Internal(format!("stored ingested document is not JSON: {e}"))
        })?;
        documents.push(json);
        last = Some(pk);
    }
    let next = match (more, last) {
        (true, Some(pk)) => Some(
            ingested_key_from_sql(ValueRef::from(&pk))
                .map_err(ServerError::Internal)
                .map(|key| {
                    eddy_core::value::Value::from(key)
                        .to_ejson(EjsonMode::Relaxed)
                        .to_string()
                })?,
        ),
        _ => None,
    };
    Ok(Page { documents, next })
}

fn is_asymmetric(store: &Store, collection: &str) -> bool {
    store.schema().collection(collection).map(|c| c.kind) == Some(CollectionKind::Asymmetric)
}

async fn get_collections(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<CollectionInfo>>, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    state
        .with_replica_and_db(|store, conn| {
            let mut infos = collections(store);
            for info in &mut infos {
                if is_asymmetric(store, &info.name) {
                    info.count = ingested_count(conn, &info.name)?;
                }
            }
            Ok(infos)
        })
        .await
        .map(Json)
}

async fn get_ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<IngestReport>, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    Ok(Json(state.ingest().report(crate::now_ms())))
}

/// `DELETE /api/admin/ingest/clients/{ident}`: forgets the queue report and figures of a device
/// that will not come back (204), or 404 when the server holds neither for that client file.
async fn forget_ingest_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(ident): UrlPath<String>,
) -> Result<StatusCode, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    let file: u64 = ident.parse().map_err(|_| {
        ServerError::BadRequest(format!(
            "\"{ident}\" is not a client file ident; use the decimal ident the ingest figures list"
        ))
    })?;
    if state.sync().forget_ingest_status(file).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ServerError::NotFound(format!(
            "no ingest queue report or figures are held for client file {file}"
        )))
    }
}

async fn get_documents(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    let Query(query) =
        query.map_err(|e| ServerError::BadRequest(format!("{e}; use ?limit=N&after=KEY")))?;
    state
        .with_replica_and_db(move |store, conn| {
            if is_asymmetric(store, &name) {
                ingested_page(conn, &name, &query)
            } else {
                page(store, &name, &query)
            }
        })
        .await
        .map(Json)
}

async fn get_users(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<UserInfo>>, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    state.auth().with_db(users).await.map(Json)
}

async fn get_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ClientFileInfo>>, ServerError> {
    check_admin_key(&headers, state.admin_key())?;
    state.auth().with_db(client_files).await.map(Json)
}

/// `GET /api/admin/history-count`: what the history holds durably. It answers 403 without the
/// header too, as it did before the other admin routes existed.
async fn history_count(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<crate::storage::HistorySummary>, ServerError> {
    check_admin_key(&headers, state.admin_key()).map_err(|e| match e {
        ServerError::Unauthorized(m) => ServerError::Forbidden(m),
        other => other,
    })?;
    state.auth().with_db(history_summary).await.map(Json)
}

/// The `/api/admin/*` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/history-count", get(history_count))
        .route("/api/admin/collections", get(get_collections))
        .route(
            "/api/admin/collections/{name}/documents",
            get(get_documents),
        )
        .route("/api/admin/users", get(get_users))
        .route("/api/admin/sessions", get(get_sessions))
        .route("/api/admin/ingest", get(get_ingest))
        .route(
            "/api/admin/ingest/clients/{ident}",
            delete(forget_ingest_client),
        )
}

/// One line of `eddy export`.
pub fn export_line(collection: &str, document: &eddy_core::value::Document) -> String {
    serde_json::json!({
        "collection": collection,
        "document": document_to_ejson(document, EjsonMode::Relaxed),
    })
    .to_string()
}

/// Writes every document of the data directory (or of one collection) to `out` as EJSON lines,
/// reading SQLite directly; returns how many documents it wrote.
pub fn export(
    data_dir: &Path,
    collection: Option<&str>,
    out: &mut dyn std::io::Write,
) -> Result<u64, ServerError> {
    let path = crate::storage::database_path(data_dir);
    if !path.exists() {
        return Err(ServerError::BadRequest(format!(
            "\"{}\" has no eddy database; pass the --data-dir of eddy serve",
            data_dir.display()
        )));
    }
    let conn = crate::storage::open_database(data_dir)?;
    let mut replica = Replica::new(saved_schema(data_dir)?);
    replica.catch_up(&conn)?;
    let store = replica.store();
    if let Some(name) = collection {
        if !store.schema().collections.contains_key(name) {
            return Err(ServerError::BadRequest(format!(
                "there is no collection \"{name}\"; export without --collection to see them all"
            )));
        }
    }
    let mut written = 0u64;
    for name in store.collections() {
        if collection.is_some_and(|c| c != name) {
            continue;
        }
        for (_, doc) in store.objects(name) {
            writeln!(out, "{}", export_line(name, doc))?;
            written = written.saturating_add(1);
        }
    }
    let asymmetric = store
        .schema()
        .collections
        .values()
        .filter(|c| c.kind == CollectionKind::Asymmetric)
        .filter(|c| collection.is_none_or(|name| name == c.name));
    for coll in asymmetric {
        let mut stmt =
            conn.prepare("SELECT document FROM ingested WHERE collection = ?1 ORDER BY pk")?;
        let mut rows = stmt.query([&coll.name])?;
        while let Some(row) = rows.next()? {
            let text: String = row.get(0)?;
            let document: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                ServerError::Internal(format!("stored ingested document is not JSON: {e}"))
            })?;
            let line = serde_json::json!({ "collection": coll.name, "document": document });
            writeln!(out, "{line}")?;
            written = written.saturating_add(1);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_core::changeset::{encode_changeset, Path as FieldPath};
    use eddy_core::server::{HistoryEntry, ServerStorage};
    use eddy_core::value::Value;
    use proptest::prelude::*;

    fn schema() -> Schema {
        eddy_core::sim::sim_schema()
    }

    /// Writes items `keys` into the history of `dir`, one changeset each.
    fn write_items(dir: &Path, keys: impl IntoIterator<Item = i64>) {
        let mut storage = crate::storage::SqliteStorage::open(dir).unwrap();
        let mut store = Store::new(schema());
        let start = storage.read_history(1, u64::MAX).unwrap().len() as u64;
        let mut entries = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let mut tx = store.write();
            tx.create("Item", PrimaryKey::Int(key)).unwrap();
            tx.set(
                FieldPath::field("Item", PrimaryKey::Int(key), "n"),
                Value::Int(key * 10),
            )
            .unwrap();
            let (instructions, _) = tx.commit();
            let body = encode_changeset(&instructions);
            entries.push(HistoryEntry {
                server_version: start + i as u64 + 1,
                origin_file_ident: 1,
                client_version: start + i as u64 + 1,
                origin_timestamp: 0,
                original_size: body.len() as u64,
                body,
            });
        }
        storage.append_history(&entries).unwrap();
        storage.flush().unwrap();
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn the_key_header_is_checked() {
        let mut headers = HeaderMap::new();
        assert!(matches!(
            check_admin_key(&headers, "k"),
            Err(ServerError::Unauthorized(_))
        ));
        headers.insert(ADMIN_KEY_HEADER, "nope".parse().unwrap());
        assert!(matches!(
            check_admin_key(&headers, "k"),
            Err(ServerError::Forbidden(_))
        ));
        headers.insert(ADMIN_KEY_HEADER, "k".parse().unwrap());
        assert!(check_admin_key(&headers, "k").is_ok());
    }

    #[test]
    fn the_replica_catches_up_incrementally_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        write_items(dir.path(), 0..5);
        let conn = crate::storage::open_database(dir.path()).unwrap();
        let mut replica = Replica::new(schema());
        replica.catch_up(&conn).unwrap();
        assert_eq!(replica.store().len("Item"), 5);
        write_items(dir.path(), 5..12);
        replica.catch_up(&conn).unwrap();
        assert!(collections(replica.store()).contains(&CollectionInfo {
            name: "Item".into(),
            kind: "top_level",
            count: 12
        }));
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let query = PageQuery {
                limit: Some(5),
                after: after.clone(),
            };
            let page = page(replica.store(), "Item", &query).unwrap();
            seen.extend(page.documents.iter().map(|d| d["_id"].as_i64().unwrap()));
            assert!(page.documents.len() <= 5);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
        let bad = |limit, after: Option<&str>| {
            let query = PageQuery {
                limit,
                after: after.map(String::from),
            };
            page(replica.store(), "Item", &query)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(Some(0), None).contains("limit=0"));
        assert!(bad(Some(MAX_PAGE + 1), None).contains("out of range"));
        assert!(bad(None, Some("[1]")).contains("after=\"[1]\""));
        let missing = page(replica.store(), "Nope", &PageQuery::default()).unwrap_err();
        assert!(matches!(missing, ServerError::BadRequest(_)));
    }

    #[test]
    fn export_writes_one_line_per_document() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SCHEMA_FILE),
            eddy_core::schema_json::schema_to_json(&schema()).to_string(),
        )
        .unwrap();
        write_items(dir.path(), [3, 1, 2]);
        let mut out = Vec::new();
        assert_eq!(export(dir.path(), Some("Item"), &mut out).unwrap(), 3);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["collection"], "Item");
        assert_eq!(lines[0]["document"]["_id"], 1);
        assert_eq!(lines[2]["document"]["n"], 30);
        let err = export(dir.path(), Some("Nope"), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("\"Nope\""), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = export(empty.path(), None, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("no eddy database"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_after_text_is_answered_without_panicking(after in "\\PC{0,40}", limit in 0usize..2000) {
            let store = Store::new(schema());
            let query = PageQuery { limit: Some(limit), after: Some(after) };
            let _ = page(&store, "Item", &query);
        }

        #[test]
        fn constant_time_eq_matches_eq(a in proptest::collection::vec(any::<u8>(), 0..8),
                                       b in proptest::collection::vec(any::<u8>(), 0..8)) {
            prop_assert_eq!(constant_time_eq(&a, &b), a == b);
        }
    }
}
