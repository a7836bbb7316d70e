//! Data: the collections the server holds, a collection's documents, and a document's history
//! of changesets (decoded here from the stored bodies).

use leptos::prelude::*;
use serde::Deserialize;

use crate::widgets::{clock, load, show_load, Instructions};
use crate::{api, console, decode};

/// One collection, as `GET /api/admin/collections` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// `top_level`, `embedded` or `asymmetric`.
    pub kind: String,
    /// How many objects it holds.
    pub count: u64,
}

/// A page of documents.
#[derive(Clone, Debug, Deserialize, PartialEq)]
struct DocumentPage {
    documents: Vec<serde_json::Value>,
    next: Option<String>,
}

/// One changeset of a document's history.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
struct HistoryEntry {
    server_version: u64,
    origin_file_ident: u64,
    user: Option<String>,
    client_version: u64,
    origin_timestamp: u64,
    body: String,
}

/// Percent-encodes a query value.
pub fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[component]
fn DocumentHistory(collection: String, key: String) -> impl IntoView {
    let admin = console().key_text();
    let path = format!(
        "/api/admin/collections/{}/history?key={}",
        query_escape(&collection),
        query_escape(&key)
    );
    let history = load(async move { api::get_json::<Vec<HistoryEntry>>(&path, &admin).await });
    view! {
        <div class="history" data-testid="document-history">
            <h3>"History of " {collection.clone()} "[" {key.clone()} "]"</h3>
            {show_load(history, |entries: Vec<HistoryEntry>| {
                if entries.is_empty() {
                    return view! { <p class="note">"No changeset in the history touched it."</p> }.into_any();
                }
                view! {
                    <ol class="timeline">
                        {entries
                            .into_iter()
                            .map(|e| {
                                view! {
                                    <li>
                                        <p>
                                            <strong>"v" {e.server_version}</strong>
                                            " from client " {e.origin_file_ident} " ("
                                            {e.user.unwrap_or_else(|| "unknown user".into())} ", client version "
                                            {e.client_version} ", " {clock(e.origin_timestamp)} ")"
                                        </p>
                                        <Instructions lines=decode::changeset_lines_base64(&e.body) />
                                    </li>
                                }
                            })
                            .collect_view()}
                    </ol>
                }
                    .into_any()
            })}
        </div>
    }
}

#[component]
fn Documents(collection: String) -> impl IntoView {
    let admin = console().key_text();
    let path = format!(
        "/api/admin/collections/{}/documents?limit=100",
        query_escape(&collection)
    );
    let page = load(async move { api::get_json::<DocumentPage>(&path, &admin).await });
    let selected = RwSignal::new(None::<String>);
    let name = collection.clone();
    view! {
        <div class="documents" data-testid="documents">
            <h2>{collection.clone()}</h2>
            {show_load(page, move |page: DocumentPage| {
                if page.documents.is_empty() {
                    return view! { <p class="note">"No documents."</p> }.into_any();
                }
                let more = page.next.is_some();
                view! {
                    <ul>
                        {page
                            .documents
                            .into_iter()
                            .map(|doc| {
                                let key = doc.get("_id").map(|k| k.to_string()).unwrap_or_default();
                                let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
                                view! {
                                    <li>
                                        <button data-testid="document" on:click=move |_| selected.set(Some(key.clone()))>
                                            <pre>{text}</pre>
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view()}
                    </ul>
                    {more.then(|| view! { <p class="note">"Showing the first 100 documents."</p> })}
                }
                    .into_any()
            })}
            {move || {
                selected
                    .get()
                    .map(|key| view! { <DocumentHistory collection=name.clone() key=key /> })
            }}
        </div>
    }
}

/// Collections, documents and a document's history.
#[component]
pub fn Data() -> impl IntoView {
    let admin = console().key_text();
    let collections = load(async move {
        api::get_json::<Vec<CollectionInfo>>("/api/admin/collections", &admin).await
    });
    let selected = RwSignal::new(None::<String>);
    view! {
        <section data-testid="page-data">
            <h1>"Data"</h1>
            <p class="note">"What the server has committed; pick a collection, then a document for its history."</p>
            {show_load(collections, move |list: Vec<CollectionInfo>| {
                if list.is_empty() {
                    return view! { <p class="note" data-testid="collections-empty">"No collections yet."</p> }.into_any();
                }
                view! {
                    <table class="table" data-testid="collections">
                        <thead><tr><th>"collection"</th><th>"kind"</th><th>"objects"</th></tr></thead>
                        <tbody>
                            {list
                                .into_iter()
                                .map(|c| {
                                    let name = c.name.clone();
                                    view! {
                                        <tr data-testid="collection-row" on:click=move |_| selected.set(Some(name.clone()))>
                                            <td>{c.name}</td>
                                            <td>{c.kind}</td>
                                            <td>{c.count}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                }
                    .into_any()
            })}
            {move || selected.get().map(|name| view! { <Documents collection=name /> })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_escape("\"a b\""), "%22a%20b%22");
        assert_eq!(
            query_escape("{\"$oid\":\"x\"}"),
            "%7B%22%24oid%22%3A%22x%22%7D"
        );
    }
}
