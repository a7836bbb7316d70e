//! Data Ingest figures: objects and bytes stored per asymmetric collection and per client file,
//! the recent rate, and the lag from the device's timestamp to durable storage. The engine
//! thread records each batch after the commit that made it durable; `GET /api/admin/ingest`
//! reads them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

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
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((now_ms, objects));
    }

    fn with_rate(&self, now_ms: u64) -> IngestFigures {
        let since = now_ms.saturating_sub(RATE_WINDOW_MS);
        let recent: u64 = self
            .recent
            .iter()
            .filter(|(at, _)| *at > since)
            .map(|(_, n)| n)
            .sum();
        IngestFigures {
            objects_per_sec: recent as f64 * 1000.0 / RATE_WINDOW_MS as f64,
            recent: VecDeque::new(),
            ..self.clone()
        }
    }
}

/// What `GET /api/admin/ingest` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IngestReport {
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

    /// The figures at `now_ms`, with rates over the last 10 seconds.
    pub fn report(&self, now_ms: u64) -> IngestReport {
        let Ok(report) = self.inner.lock() else {
            return IngestReport::default();
        };
        IngestReport {
            collections: report
                .collections
                .iter()
                .map(|(c, f)| (c.clone(), f.with_rate(now_ms)))
                .collect(),
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
}
