//! Ingest: the server's Data Ingest figures per asymmetric collection and per client file
//! (objects and bytes stored, objects/s over the last 10 s, lag from the device's timestamp to
//! durable), from `GET /api/admin/ingest`, beside each asymmetric collection's stored count.

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::Deserialize;

use crate::routes::data::CollectionInfo;
use crate::widgets::{clock, load, show_load};
use crate::{api, console};

/// One series of `/api/admin/ingest`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Figures {
    /// Objects stored.
    pub objects: u64,
    /// Bytes of uploaded changeset bodies they took.
    pub bytes: u64,
    /// Objects per second over the last 10 seconds.
    pub objects_per_sec: f64,
    /// Lag of the latest batch, device timestamp to durable.
    pub last_lag_ms: u64,
    /// The largest lag seen.
    pub max_lag_ms: u64,
    /// When the latest batch became durable.
    pub last_stored_ms: u64,
}

/// `GET /api/admin/ingest`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Report {
    /// Per collection.
    pub collections: BTreeMap<String, Figures>,
    /// Per client file ident, then per collection.
    pub clients: BTreeMap<String, BTreeMap<String, Figures>>,
}

/// The per-client rows, busiest first: (collection, client, figures).
pub fn client_rows(report: &Report) -> Vec<(String, String, Figures)> {
    let mut rows: Vec<(String, String, Figures)> = report
        .clients
        .iter()
        .flat_map(|(client, per)| {
            per.iter()
                .map(|(collection, f)| (collection.clone(), client.clone(), f.clone()))
        })
        .collect();
    rows.sort_by(|a, b| b.2.objects.cmp(&a.2.objects).then(a.0.cmp(&b.0)));
    rows
}

fn figure_cells(f: &Figures) -> impl IntoView {
    view! {
        <td>{f.objects}</td>
        <td>{f.bytes}</td>
        <td>{format!("{:.1}", f.objects_per_sec)}</td>
        <td>{format!("{} ms", f.last_lag_ms)}</td>
        <td>{format!("{} ms", f.max_lag_ms)}</td>
        <td>{clock(f.last_stored_ms)}</td>
    }
}

/// Asymmetric collections and ingest per client.
#[component]
pub fn Ingest() -> impl IntoView {
    let c = console();
    let admin = c.key_text();
    let figures_key = admin.clone();
    let collections = load(async move {
        api::get_json::<Vec<CollectionInfo>>("/api/admin/collections", &admin).await
    });
    let report =
        load(async move { api::get_json::<Report>("/api/admin/ingest", &figures_key).await });
    view! {
        <section data-testid="page-ingest">
            <h1>"Ingest"</h1>
            <p class="note" data-testid="ingest-note">
                "Figures since the server started, as of opening this page: objects stored, their bytes, objects/s over the last 10 s, and the lag from the device's timestamp to durable storage. "
                "Devices do not report their upload queues to the server yet."
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
                view! {
                    <table class="table" data-testid="ingest-collections">
                        <thead><tr><th>"asymmetric collection"</th><th>"objects stored"</th></tr></thead>
                        <tbody>
                            {asymmetric
                                .into_iter()
                                .map(|c| view! { <tr><td>{c.name}</td><td>{c.count}</td></tr> })
                                .collect_view()}
                        </tbody>
                    </table>
                }
                    .into_any()
            })}
            {show_load(report, move |report: Report| {
                let per_collection = report
                    .collections
                    .iter()
                    .map(|(name, f)| view! { <tr><td>{name.clone()}</td>{figure_cells(f)}</tr> })
                    .collect_view();
                let per_client = client_rows(&report)
                    .into_iter()
                    .map(|(collection, client, f)| {
                        view! { <tr><td>{collection}</td><td>{client}</td>{figure_cells(&f)}</tr> }
                    })
                    .collect_view();
                view! {
                    <h2>"Per collection"</h2>
                    <table class="table" data-testid="ingest-figures">
                        <thead><tr><th>"collection"</th><th>"objects"</th><th>"bytes"</th><th>"objects/s"</th><th>"last lag"</th><th>"max lag"</th><th>"last stored"</th></tr></thead>
                        <tbody>{per_collection}</tbody>
                    </table>
                    <h2>"Per client"</h2>
                    <table class="table" data-testid="ingest-clients">
                        <thead><tr><th>"collection"</th><th>"client"</th><th>"objects"</th><th>"bytes"</th><th>"objects/s"</th><th>"last lag"</th><th>"max lag"</th><th>"last stored"</th></tr></thead>
                        <tbody>{per_client}</tbody>
                    </table>
                }
            })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_parses_and_clients_are_listed_busiest_first() {
        let report: Report = serde_json::from_str(
            r#"{"collections": {"Reading": {"objects": 30, "bytes": 900, "objects_per_sec": 3.0,
                "last_lag_ms": 12, "max_lag_ms": 40, "last_stored_ms": 5}},
               "clients": {"7": {"Reading": {"objects": 10, "bytes": 300, "objects_per_sec": 1.0,
                "last_lag_ms": 12, "max_lag_ms": 12, "last_stored_ms": 5}},
                "8": {"Reading": {"objects": 20, "bytes": 600, "objects_per_sec": 2.0,
                "last_lag_ms": 40, "max_lag_ms": 40, "last_stored_ms": 4}}}}"#,
        )
        .unwrap();
        assert_eq!(report.collections["Reading"].objects, 30);
        let rows = client_rows(&report);
        assert_eq!(
            rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            vec!["8", "7"]
        );
    }
}
