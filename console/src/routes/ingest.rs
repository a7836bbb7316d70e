//! Ingest: the server's Data Ingest figures per asymmetric collection and per client file
//! (objects and bytes stored, objects/s over the last 10 s, lag from the device's timestamp to
//! durable) and the upload queue each device last reported (objects and bytes pending, age of
//! the oldest), from `GET /api/admin/ingest`, beside each asymmetric collection's stored count.
//! The page refreshes every [`REFRESH_MS`] and says when its figures are from.

use std::collections::BTreeMap;
use std::time::Duration;

use leptos::prelude::*;
use serde::Deserialize;

use crate::routes::data::CollectionInfo;
use crate::widgets::clock;
use crate::{api, console};

/// How often the page asks the server again, in milliseconds.
pub const REFRESH_MS: u64 = 2_000;

/// One series of `/api/admin/ingest`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Figures {
    /// Objects stored.
    #[serde(default)]
    pub objects: u64,
    /// Bytes of uploaded changeset bodies they took.
    #[serde(default)]
    pub bytes: u64,
    /// Objects per second over the last 10 seconds.
    #[serde(default)]
    pub objects_per_sec: f64,
    /// Lag of the latest batch, device timestamp to durable.
    #[serde(default)]
    pub last_lag_ms: u64,
    /// The largest lag seen.
    #[serde(default)]
    pub max_lag_ms: u64,
    /// When the latest batch became durable.
    #[serde(default)]
    pub last_stored_ms: u64,
    /// Objects waiting in the device's queue as last reported (summed over devices for a
    /// collection).
    #[serde(default)]
    pub pending_objects: u64,
    /// Their bytes.
    #[serde(default)]
    pub pending_bytes: u64,
    /// How long the oldest of them has waited.
    #[serde(default)]
    pub oldest_pending_age_ms: u64,
    /// When the device last reported its queue (0: never).
    #[serde(default)]
    pub pending_reported_ms: u64,
}

/// `GET /api/admin/ingest`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Report {
    /// When the server took these figures.
    #[serde(default)]
    pub as_of_ms: u64,
    /// Per collection.
    #[serde(default)]
    pub collections: BTreeMap<String, Figures>,
    /// Per client file ident, then per collection.
    #[serde(default)]
    pub clients: BTreeMap<String, BTreeMap<String, Figures>>,
}

/// What one refresh brings: the asymmetric collections with their stored counts, and the figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Asymmetric collections only.
    pub collections: Vec<CollectionInfo>,
    /// The figures.
    pub report: Report,
}

/// The page's state: the latest snapshot (kept while a refresh fails) and the latest error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Live {
    /// The latest snapshot, once one arrived.
    pub snapshot: Option<Snapshot>,
    /// Why the latest refresh failed, if it did.
    pub error: Option<String>,
}

/// The per-client rows, most pending first, then busiest: (collection, client, figures).
pub fn client_rows(report: &Report) -> Vec<(String, String, Figures)> {
    let mut rows: Vec<(String, String, Figures)> = report
        .clients
        .iter()
        .flat_map(|(client, per)| {
            per.iter()
                .map(|(collection, f)| (collection.clone(), client.clone(), f.clone()))
        })
        .collect();
    rows.sort_by(|a, b| {
        b.2.pending_objects
            .cmp(&a.2.pending_objects)
            .then(b.2.objects.cmp(&a.2.objects))
            .then(a.0.cmp(&b.0))
            .then(a.1.cmp(&b.1))
    });
    rows
}

/// A duration in milliseconds as people read it.
pub fn age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} min {} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {} min", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// When a queue report arrived, relative to the snapshot's time; a device silent for a day or
/// more may be gone for good (the server cannot tell it from one that is offline).
pub fn reported_text(reported_ms: u64, as_of_ms: u64) -> String {
    let ago = as_of_ms.saturating_sub(reported_ms);
    if ago >= 24 * 3_600_000 {
        format!("{} ago (device silent since: offline, or gone)", age(ago))
    } else {
        format!("{} ago", age(ago))
    }
}

fn queue_cells(f: &Figures, as_of_ms: u64) -> impl IntoView {
    if f.pending_reported_ms == 0 {
        return view! { <td class="note" colspan="4" data-testid="queued">"not reported"</td> }
            .into_any();
    }
    view! {
        <td data-testid="queued">{f.pending_objects}</td>
        <td>{f.pending_bytes}</td>
        <td>{if f.pending_objects == 0 { "—".to_owned() } else { age(f.oldest_pending_age_ms) }}</td>
        <td data-testid="reported">{reported_text(f.pending_reported_ms, as_of_ms)}</td>
    }
    .into_any()
}

fn figure_cells(f: &Figures, as_of_ms: u64) -> impl IntoView {
    view! {
        {queue_cells(f, as_of_ms)}
        <td data-testid="stored">{f.objects}</td>
        <td>{f.bytes}</td>
        <td>{format!("{:.1}", f.objects_per_sec)}</td>
        <td>{format!("{} ms", f.last_lag_ms)}</td>
        <td>{format!("{} ms", f.max_lag_ms)}</td>
        <td>{if f.last_stored_ms == 0 { "—".to_owned() } else { clock(f.last_stored_ms) }}</td>
    }
}

const HEADINGS: [&str; 10] = [
    "queued",
    "queued bytes",
    "oldest queued",
    "reported",
    "stored",
    "bytes",
    "objects/s",
    "last lag",
    "max lag",
    "last stored",
];

async fn fetch(key: String) -> Result<Snapshot, String> {
    let collections = api::get_json::<Vec<CollectionInfo>>("/api/admin/collections", &key).await?;
    let report = api::get_json::<Report>("/api/admin/ingest", &key).await?;
    Ok(Snapshot {
        collections: collections
            .into_iter()
            .filter(|c| c.kind == "asymmetric")
            .collect(),
        report,
    })
}

/// Asks the server once, unless a request is still out; keeps the last snapshot on failure.
fn refresh(key: String, live: RwSignal<Live>, busy: RwSignal<bool>) {
    if busy.get_untracked() {
        return;
    }
    busy.set(true);
    leptos::task::spawn_local(async move {
        let result = fetch(key).await;
        live.update(|l| match result {
            Ok(snapshot) => {
                l.snapshot = Some(snapshot);
                l.error = None;
            }
            Err(e) => l.error = Some(e),
        });
        busy.set(false);
    });
}

/// Forgets a device's queue report and figures on the server (for a device that will not come
/// back), then refreshes.
fn forget(client: String, key: String, live: RwSignal<Live>, busy: RwSignal<bool>) {
    leptos::task::spawn_local(async move {
        let path = format!("/api/admin/ingest/clients/{client}");
        match api::delete(&path, &key).await {
            Ok(()) => refresh(key, live, busy),
            Err(e) => {
                live.update(|l| l.error = Some(format!("cannot forget device {client}: {e}")))
            }
        }
    });
}

fn tables(snapshot: Snapshot, on_forget: impl Fn(String) + Clone + 'static) -> impl IntoView {
    if snapshot.collections.is_empty() && snapshot.report.collections.is_empty() {
        return view! {
            <p class="note" data-testid="ingest-empty">
                "No asymmetric collections: add one to the schema (\"asymmetric\": true) to ingest write-only data."
            </p>
        }
        .into_any();
    }
    let heads = || {
        HEADINGS
            .iter()
            .map(|h| view! { <th>{*h}</th> })
            .collect_view()
    };
    let report = snapshot.report;
    let as_of = report.as_of_ms;
    let per_collection = report
        .collections
        .iter()
        .map(|(name, f)| view! { <tr><td>{name.clone()}</td>{figure_cells(f, as_of)}</tr> })
        .collect_view();
    let rows = client_rows(&report);
    let per_client = if rows.is_empty() {
        view! { <p class="note">"No device has ingested or reported a queue since the server started."</p> }
            .into_any()
    } else {
        let body = rows
            .into_iter()
            .map(|(collection, client, f)| {
                let on_forget = on_forget.clone();
                let ident = client.clone();
                let button = view! {
                    <button data-testid="forget-device" title="Forget this device's queue report and figures (it reports again if it comes back)" on:click=move |_| on_forget(ident.clone())>
                        "forget"
                    </button>
                };
                view! { <tr data-testid="ingest-client-row"><td>{collection}</td><td data-testid="ingest-client">{client}</td>{figure_cells(&f, as_of)}<td>{button}</td></tr> }
            })
            .collect_view();
        view! {
            <table class="table" data-testid="ingest-clients">
                <thead><tr><th>"collection"</th><th>"client"</th>{heads()}<th></th></tr></thead>
                <tbody>{body}</tbody>
            </table>
        }
        .into_any()
    };
    view! {
        <table class="table" data-testid="ingest-collections">
            <thead><tr><th>"asymmetric collection"</th><th>"objects stored"</th></tr></thead>
            <tbody>
                {snapshot
                    .collections
                    .into_iter()
                    .map(|c| {
                        view! {
                            <tr data-testid="ingest-collection-row">
                                <td>{c.name}</td>
                                <td data-testid="stored-count">{c.count}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
        <h2>"Per collection"</h2>
        <table class="table" data-testid="ingest-figures">
            <thead><tr><th>"collection"</th>{heads()}</tr></thead>
            <tbody>{per_collection}</tbody>
        </table>
        <h2>"Per device"</h2>
        {per_client}
    }
    .into_any()
}

/// Asymmetric collections, device queues and ingest per client, refreshed every 2 s.
#[component]
pub fn Ingest() -> impl IntoView {
    let c = console();
    let live = RwSignal::new(Live::default());
    let busy = RwSignal::new(false);
    let key = c.key_text();
    refresh(key.clone(), live, busy);
    let forget_key = key.clone();
    let on_forget = move |client: String| forget(client, forget_key.clone(), live, busy);
    let tick = move || refresh(key.clone(), live, busy);
    if let Ok(handle) = set_interval_with_handle(tick, Duration::from_millis(REFRESH_MS)) {
        on_cleanup(move || handle.clear());
    }
    view! {
        <section data-testid="page-ingest">
            <h1>"Ingest"</h1>
            <p class="note" data-testid="ingest-note">
                "Queued: what each device's upload queue held when it last reported (devices report on connecting and then at most once a second when it changes; a report stays until the device reports again or is reset, so a device silent for long may be gone: \"forget\" drops a device's report and figures, and a device that comes back reports again). "
                "Stored: objects and bytes durable on the server since it started, objects/s over the last 10 s, and the lag from the device's timestamp to durable storage."
            </p>
            <p class="note" data-testid="ingest-updated">
                {move || match live.with(|l| l.snapshot.as_ref().map(|s| s.report.as_of_ms)) {
                    Some(at) => format!("Updated {} (server time), every {} s.", clock(at), REFRESH_MS / 1000),
                    None => String::new(),
                }}
            </p>
            {move || {
                live.with(|l| l.error.clone())
                    .map(|e| view! { <p class="error" data-testid="load-error">{e}</p> })
            }}
            {move || match live.with(|l| l.snapshot.clone()) {
                Some(snapshot) => tables(snapshot, on_forget.clone()).into_any(),
                None if live.with(|l| l.error.is_none()) => {
                    view! { <p class="loading" data-testid="loading">"Loading…"</p> }.into_any()
                }
                None => ().into_any(),
            }}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_parses_and_devices_with_a_queue_come_first() {
        let report: Report = serde_json::from_str(
            r#"{"as_of_ms": 9, "collections": {"Reading": {"objects": 30, "bytes": 900,
                "objects_per_sec": 3.0, "last_lag_ms": 12, "max_lag_ms": 40, "last_stored_ms": 5,
                "pending_objects": 7, "pending_bytes": 630, "oldest_pending_age_ms": 1500,
                "pending_reported_ms": 8}},
               "clients": {"7": {"Reading": {"objects": 10, "bytes": 300, "objects_per_sec": 1.0,
                "last_lag_ms": 12, "max_lag_ms": 12, "last_stored_ms": 5,
                "pending_objects": 7, "pending_bytes": 630, "oldest_pending_age_ms": 1500,
                "pending_reported_ms": 8}},
                "8": {"Reading": {"objects": 20, "bytes": 600, "objects_per_sec": 2.0,
                "last_lag_ms": 40, "max_lag_ms": 40, "last_stored_ms": 4}},
                "9": {"Reading": {"objects": 25}}}}"#,
        )
        .unwrap();
        assert_eq!(report.as_of_ms, 9);
        assert_eq!(report.collections["Reading"].objects, 30);
        assert_eq!(report.collections["Reading"].pending_objects, 7);
        let rows = client_rows(&report);
        assert_eq!(
            rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            vec!["7", "9", "8"]
        );
        assert_eq!(rows[2].2.pending_reported_ms, 0, "8 never reported");
    }

    #[test]
    fn reports_say_how_old_they_are() {
        assert_eq!(reported_text(1_000, 2_500), "1.5 s ago");
        assert_eq!(
            reported_text(5_000, 1_000),
            "0 ms ago",
            "clocks never run backwards here"
        );
        assert!(reported_text(0, 25 * 3_600_000).contains("offline, or gone"));
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(0), "0 ms");
        assert_eq!(age(1_500), "1.5 s");
        assert_eq!(age(125_000), "2 min 5 s");
        assert_eq!(age(3_600_000 * 3 + 60_000 * 4), "3 h 4 min");
    }
}
