//! Data Ingest figures: objects and bytes stored per asymmetric collection and per client file,
//! the recent rate, the lag from the device's timestamp to durable storage, and what each
//! device's upload queue still holds as it last reported (INGEST_STATUS). The engine thread
//! records each batch after the commit that made it durable, and each report as it arrives;
//! `GET /api/admin/ingest` reads them. The engine stores each report in the server's SQLite and
//! hands the stored ones back at start ([`IngestStats::restore`]); the stored-object figures
//! (counts since start, rate, lag) are kept in memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use eddy_core::protocol::IngestStatusEntry;
use eddy_core::server::StoredIngestStatus;
use serde::Serialize;

/// The window over which rates are computed.
const RATE_WINDOW_MS: u64 = 10_000;
/// Most batches remembered for the rate of one series (older ones fall out of the window anyway).
const MAX_RECENT: usize = 4_096;

/// Figures of one series (a collection, or a client file's share of a collection).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IngestFigures {
    /// Objects stored.
    pub objects: u64,
    /// The bytes of uploaded changeset bodies they took.
    pub bytes: u64,
    /// Objects per second over the last 10 seconds.
    pub objects_per_sec: f64,
    /// Lag of the latest batch: from the device's timestamp to durable, in milliseconds.
    pub last_lag_ms: u64,
    /// The largest lag seen.
    pub max_lag_ms: u64,
    /// When the latest batch became durable (milliseconds since the Unix epoch).
    pub last_stored_ms: u64,
    /// Objects waiting in the device's upload queue as it last reported, less those stored since
    /// (for a collection, the sum over devices).
    pub pending_objects: u64,
    /// Their bytes as encoded instructions.
    pub pending_bytes: u64,
    /// How long the oldest of them has waited, as of now (for a collection, the oldest over
    /// devices); 0 when none waits.
    pub oldest_pending_age_ms: u64,
    /// When the device last reported its queue (for a collection, the latest report); 0 when it
    /// never did.
    pub pending_reported_ms: u64,
    #[serde(skip)]
    recent: VecDeque<(u64, u64)>,
}

impl IngestFigures {
    fn record(&mut self, now_ms: u64, objects: u64, bytes: u64, lag_ms: u64) {
        self.objects += objects;
        self.bytes += bytes;
        self.last_lag_ms = lag_ms;
        self.max_lag_ms = self.max_lag_ms.max(lag_ms);
        self.last_stored_ms = now_ms;
        // Stored objects have left the device's queue: take them off its last report until the
        // next one, so a device that disconnects right after its upload does not look stuck.
        self.pending_objects = self.pending_objects.saturating_sub(objects);
        self.pending_bytes = if self.pending_objects == 0 {
            0
        } else {
            self.pending_bytes.saturating_sub(bytes)
        };
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((now_ms, objects));
    }

    fn report_queue(&mut self, now_ms: u64, entry: &IngestStatusEntry) {
        self.pending_objects = entry.objects;
        self.pending_bytes = entry.bytes;
        self.oldest_pending_age_ms = entry.oldest_age_ms;
        self.pending_reported_ms = now_ms;
    }

    fn with_rate(&self, now_ms: u64) -> IngestFigures {
        let since = now_ms.saturating_sub(RATE_WINDOW_MS);
        // The reported age grows until the next report.
        let oldest_pending_age_ms = if self.pending_objects == 0 {
            0
        } else {
            self.oldest_pending_age_ms + now_ms.saturating_sub(self.pending_reported_ms)
        };
        let recent: u64 = self
            .recent
            .iter()
            .filter(|(at, _)| *at > since)
            .map(|(_, n)| n)
            .sum();
        IngestFigures {
            objects_per_sec: recent as f64 * 1000.0 / RATE_WINDOW_MS as f64,
            oldest_pending_age_ms,
            recent: VecDeque::new(),
            ..self.clone()
        }
    }
}

/// What `GET /api/admin/ingest` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IngestReport {
    /// When these figures were taken (milliseconds since the Unix epoch, server clock).
    pub as_of_ms: u64,
    /// Per asymmetric collection.
    pub collections: BTreeMap<String, IngestFigures>,
    /// Per client file ident (decimal), then per collection.
    pub clients: BTreeMap<String, BTreeMap<String, IngestFigures>>,
}

/// The running figures, shared by the engine thread and the admin API.
#[derive(Debug, Default)]
pub struct IngestStats {
    inner: Mutex<IngestReport>,
}

/// One durable batch, as the engine reported it.
#[derive(Clone, Copy, Debug)]
pub struct IngestBatch<'a> {
    /// The client file it came from.
    pub origin_file_ident: u64,
    /// The device's timestamp.
    pub origin_timestamp: u64,
    /// The collection.
    pub collection: &'a str,
    /// How many objects.
    pub objects: u64,
    /// How many bytes.
    pub bytes: u64,
}

impl IngestStats {
    /// Records a batch that became durable at `now_ms`.
    pub fn record(&self, now_ms: u64, batch: IngestBatch<'_>) {
        let lag = now_ms.saturating_sub(batch.origin_timestamp);
        let Ok(mut report) = self.inner.lock() else {
            return;
        };
        report
            .collections
            .entry(batch.collection.to_owned())
            .or_default()
            .record(now_ms, batch.objects, batch.bytes, lag);
        report
            .clients
            .entry(batch.origin_file_ident.to_string())
            .or_default()
            .entry(batch.collection.to_owned())
            .or_default()
            .record(now_ms, batch.objects, batch.bytes, lag);
    }

    /// Records what a device's upload queue holds, as it reported at `now_ms`.
    pub fn report_queue(&self, now_ms: u64, client_file_ident: u64, entries: &[IngestStatusEntry]) {
        let Ok(mut report) = self.inner.lock() else {
            return;
        };
        // An empty queue from a device that never ingested (most devices, after each IDENT)
        // adds nothing to the figures, so it gets no entry: idle sessions stay small.
        let client = client_file_ident.to_string();
        for entry in entries {
            let known = report
                .clients
                .get(&client)
                .is_some_and(|per| per.contains_key(&entry.collection));
            if entry.objects == 0 && !known {
                continue;
            }
            report
                .clients
                .entry(client.clone())
                .or_default()
                .entry(entry.collection.clone())
                .or_default()
                .report_queue(now_ms, entry);
        }
    }

    /// Takes back the queue reports the engine restored from storage at start, each as of when
    /// it arrived, so a device that has not reconnected since still shows what it last reported.
    pub fn restore<'a>(&self, reports: impl IntoIterator<Item = (u64, &'a StoredIngestStatus)>) {
        for (client, status) in reports {
            self.report_queue(status.reported_ms, client, &status.collections);
        }
    }

    /// Forgets a client file's figures and queue report (its device reset the file, so its queue
    /// moved to the file replacing it, or an admin forgot the device); returns whether there
    /// were any.
    pub fn forget(&self, client_file_ident: u64) -> bool {
        self.inner.lock().is_ok_and(|mut report| {
            report
                .clients
                .remove(&client_file_ident.to_string())
                .is_some()
        })
    }

    /// The figures at `now_ms`, with rates over the last 10 seconds.
    pub fn report(&self, now_ms: u64) -> IngestReport {
        let Ok(report) = self.inner.lock() else {
            return IngestReport::default();
        };
        let mut collections: BTreeMap<String, IngestFigures> = report
            .collections
            .iter()
            .map(|(c, f)| (c.clone(), f.with_rate(now_ms)))
            .collect();
        for per in report.clients.values() {
            for (name, f) in per {
                let device = f.with_rate(now_ms);
                let all = collections.entry(name.clone()).or_default();
                all.pending_objects += device.pending_objects;
                all.pending_bytes += device.pending_bytes;
                all.oldest_pending_age_ms =
                    all.oldest_pending_age_ms.max(device.oldest_pending_age_ms);
                all.pending_reported_ms = all.pending_reported_ms.max(device.pending_reported_ms);
            }
        }
        IngestReport {
            as_of_ms: now_ms,
            collections,
            clients: report
                .clients
                .iter()
                .map(|(client, per)| {
                    (
                        client.clone(),
                        per.iter()
                            .map(|(c, f)| (c.clone(), f.with_rate(now_ms)))
                            .collect(),
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_reports_keep_their_time_and_a_reset_file_is_forgotten() {
        let stats = IngestStats::default();
        let status = StoredIngestStatus {
            reported_ms: 1_000,
            collections: vec![IngestStatusEntry {
                collection: "Reading".into(),
                objects: 6,
                bytes: 540,
                oldest_age_ms: 200,
            }],
        };
        stats.restore([(7, &status)]);
        let report = stats.report(4_000);
        let seven = &report.clients["7"]["Reading"];
        assert_eq!((seven.pending_objects, seven.pending_bytes), (6, 540));
        assert_eq!(seven.pending_reported_ms, 1_000);
        assert_eq!(seven.oldest_pending_age_ms, 3_200);
        assert_eq!(report.collections["Reading"].pending_objects, 6);
        stats.forget(7);
        let report = stats.report(4_000);
        assert!(report.clients.is_empty());
        assert!(report.collections.is_empty(), "{report:?}");
    }

    #[test]
    fn figures_add_up_per_collection_and_client_with_a_windowed_rate() {
        let stats = IngestStats::default();
        let batch = |client, objects| IngestBatch {
            origin_file_ident: client,
            origin_timestamp: 1_000,
            collection: "Reading",
            objects,
            bytes: objects * 100,
        };
        stats.record(1_050, batch(7, 10));
        stats.record(20_000, batch(8, 30));
        let report = stats.report(20_000);
        let all = &report.collections["Reading"];
        assert_eq!((all.objects, all.bytes), (40, 4_000));
        assert_eq!(all.last_lag_ms, 19_000);
        assert_eq!(all.max_lag_ms, 19_000);
        // Only the second batch is inside the 10-second window.
        assert!((all.objects_per_sec - 3.0).abs() < 1e-9, "{all:?}");
        assert_eq!(report.clients["7"]["Reading"].objects, 10);
        assert_eq!(report.clients["7"]["Reading"].last_lag_ms, 50);
        assert_eq!(report.clients["8"]["Reading"].objects, 30);
    }

    #[test]
    fn an_empty_queue_from_a_device_that_never_ingested_adds_no_entry() {
        let stats = IngestStats::default();
        let entry = |objects| IngestStatusEntry {
            collection: "Reading".into(),
            objects,
            bytes: objects * 90,
            oldest_age_ms: 0,
        };
        stats.report_queue(1_000, 7, &[entry(0)]);
        assert!(stats.report(1_000).clients.is_empty());
        // Once a device has had a queue, its emptying is recorded.
        stats.report_queue(1_000, 7, &[entry(5)]);
        stats.report_queue(2_000, 7, &[entry(0)]);
        let seven = &stats.report(2_000).clients["7"]["Reading"];
        assert_eq!(
            (seven.pending_objects, seven.pending_reported_ms),
            (0, 2_000)
        );
    }

    #[test]
    fn device_queues_are_kept_per_client_summed_per_collection_and_age_until_the_next_report() {
        let stats = IngestStats::default();
        let entry = |objects, age| IngestStatusEntry {
            collection: "Reading".into(),
            objects,
            bytes: objects * 90,
            oldest_age_ms: age,
        };
        stats.report_queue(1_000, 7, &[entry(10, 500)]);
        stats.report_queue(1_000, 8, &[entry(4, 2_000)]);
        let report = stats.report(1_300);
        let seven = &report.clients["7"]["Reading"];
        assert_eq!((seven.pending_objects, seven.pending_bytes), (10, 900));
        assert_eq!(seven.oldest_pending_age_ms, 800);
        assert_eq!(seven.pending_reported_ms, 1_000);
        assert_eq!(seven.objects, 0, "nothing stored yet");
        let all = &report.collections["Reading"];
        assert_eq!((all.pending_objects, all.pending_bytes), (14, 1_260));
        assert_eq!(all.oldest_pending_age_ms, 2_300);

        // Objects stored from a device come off its last report until the next one.
        let batch = |objects| IngestBatch {
            origin_file_ident: 8,
            origin_timestamp: 900,
            collection: "Reading",
            objects,
            bytes: objects * 90,
        };
        stats.record(1_400, batch(3));
        let eight = &stats.report(1_400).clients["8"]["Reading"];
        assert_eq!((eight.pending_objects, eight.pending_bytes), (1, 90));
        stats.record(1_500, batch(3));
        let eight = &stats.report(1_500).clients["8"]["Reading"];
        assert_eq!((eight.pending_objects, eight.pending_bytes), (0, 0));
        assert_eq!(eight.oldest_pending_age_ms, 0);
        stats.report_queue(1_600, 8, &[entry(4, 2_000)]);

        // An emptied queue replaces the previous report and has no age.
        stats.report_queue(2_000, 7, &[entry(0, 0)]);
        let report = stats.report(9_000);
        assert_eq!(report.clients["7"]["Reading"].pending_objects, 0);
        assert_eq!(report.clients["7"]["Reading"].oldest_pending_age_ms, 0);
        assert_eq!(report.collections["Reading"].pending_objects, 4);
    }
}
