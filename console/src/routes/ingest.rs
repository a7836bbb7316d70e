//! Ingest: asymmetric collections and what clients sent to them. Data Ingest (client-reported
//! queue depth, lag) is being built separately; until it lands this page shows what the server
//! knows: asymmetric collections, their committed objects, and the changesets to them the feed saw.

use std::collections::BTreeMap;

use leptos::prelude::*;

use crate::model::Event;
use crate::routes::data::CollectionInfo;
use crate::widgets::{clock, load, show_load};
use crate::{api, console};

/// Per (collection, client): changesets, objects written and the last one's time.
pub fn per_client(
    changesets: &[Event],
    asymmetric: &[String],
) -> BTreeMap<(String, u64), (u64, u64, u64)> {
    let mut out: BTreeMap<(String, u64), (u64, u64, u64)> = BTreeMap::new();
    for event in changesets {
        for collection in event.collections.iter().filter(|c| asymmetric.contains(c)) {
            let prefix = format!("{collection}/");
            let objects = event
                .objects
                .iter()
                .filter(|o| o.starts_with(&prefix))
                .count() as u64;
            let entry = out
                .entry((collection.clone(), event.client.unwrap_or(0)))
                .or_default();
            entry.0 += 1;
            entry.1 += objects;
            entry.2 = entry.2.max(event.at);
        }
    }
    out
}

/// Asymmetric collections and ingest per client.
#[component]
pub fn Ingest() -> impl IntoView {
    let c = console();
    let admin = c.key_text();
    let collections = load(async move {
        api::get_json::<Vec<CollectionInfo>>("/api/admin/collections", &admin).await
    });
    view! {
        <section data-testid="page-ingest">
            <h1>"Ingest"</h1>
            <p class="note" data-testid="ingest-note">
                "Data Ingest is not part of this server yet: clients report no queue depth, rate or lag. "
                "Shown here is what the server knows: its asymmetric collections and the changesets clients sent to them."
            </p>
            {show_load(collections, move |list: Vec<CollectionInfo>| {
                let asymmetric: Vec<CollectionInfo> =
                    list.into_iter().filter(|c| c.kind == "asymmetric").collect();
                if asymmetric.is_empty() {
                    return view! {
                        <p class="note" data-testid="ingest-empty">
                            "No asymmetric collections: add one to the schema (\"asymmetric\": true) to ingest write-only data."
                        </p>
                    }
                        .into_any();
                }
                let names: Vec<String> = asymmetric.iter().map(|c| c.name.clone()).collect();
                let rows = move || {
                    let changesets = c.model.with(|m| m.changesets.iter().cloned().collect::<Vec<_>>());
                    per_client(&changesets, &names)
                        .into_iter()
                        .map(|((collection, client), (count, objects, last))| {
                            view! { <tr><td>{collection}</td><td>{client}</td><td>{count}</td><td>{objects}</td><td>{clock(last)}</td></tr> }
                        })
                        .collect_view()
                };
                view! {
                    <table class="table" data-testid="ingest-collections">
                        <thead><tr><th>"asymmetric collection"</th><th>"objects committed"</th></tr></thead>
                        <tbody>
                            {asymmetric
                                .into_iter()
                                .map(|c| view! { <tr><td>{c.name}</td><td>{c.count}</td></tr> })
                                .collect_view()}
                        </tbody>
                    </table>
                    <h2>"Per client (changesets the feed saw)"</h2>
                    <table class="table" data-testid="ingest-clients">
                        <thead><tr><th>"collection"</th><th>"client"</th><th>"changesets"</th><th>"objects"</th><th>"last"</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                }
                    .into_any()
            })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_collections_are_counted_per_client() {
        let events = vec![
            Event {
                collections: vec!["Log".into(), "Item".into()],
                objects: vec!["Log/1".into(), "Log/2".into(), "Item/1".into()],
                client: Some(3),
                at: 5,
                ..Event::default()
            },
            Event {
                collections: vec!["Item".into()],
                objects: vec!["Item/2".into()],
                client: Some(3),
                ..Event::default()
            },
        ];
        let rows = per_client(&events, &["Log".to_owned()]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[&("Log".to_owned(), 3)], (1, 2, 5));
    }
}
