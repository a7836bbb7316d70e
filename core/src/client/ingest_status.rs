//! When a session reports its Data Ingest queue (INGEST_STATUS): once after each IDENT, then
//! whenever the pending objects or bytes changed, at most once per [`MIN_INTERVAL_MS`]. Time is
//! passed in; the session computes the figures only when a report may be due, and at most once
//! per [`MIN_INTERVAL_MS`] even when they turn out unchanged (computing them scans the whole
//! upload queue, so doing it on every write made a long queue quadratic).

use crate::protocol::IngestStatusEntry;

/// The shortest time between two reports that follow changes, in milliseconds.
pub const MIN_INTERVAL_MS: u64 = 1000;

/// The throttle of one session's INGEST_STATUS reports.
#[derive(Debug, Default)]
pub(crate) struct IngestReporter {
    /// A report is owed whatever changed (the session was just identified).
    owed: bool,
    /// The queue may have changed since the last report.
    dirty: bool,
    /// When the figures were last computed (whether or not they were sent).
    checked_at: Option<u64>,
    /// The last report's (collection, objects, bytes): a change of age alone is not reported.
    last: Vec<(String, u64, u64)>,
}

impl IngestReporter {
    /// The session sent IDENT: the next poll reports whatever the queue holds.
    pub(crate) fn identified(&mut self) {
        self.owed = true;
    }

    /// The upload queue may have changed.
    pub(crate) fn touch(&mut self) {
        self.dirty = true;
    }

    /// When [`IngestReporter::poll`] may next have something to send.
    pub(crate) fn deadline(&self) -> Option<u64> {
        if self.owed {
            Some(0)
        } else if self.dirty {
            Some(
                self.checked_at
                    .map_or(0, |t| t.saturating_add(MIN_INTERVAL_MS)),
            )
        } else {
            None
        }
    }

    /// The report to send at `now_ms`, if one is due; `figures` computes it. A client with no
    /// asymmetric collection (empty figures) never reports.
    pub(crate) fn poll(
        &mut self,
        now_ms: u64,
        figures: impl FnOnce() -> Vec<IngestStatusEntry>,
    ) -> Option<Vec<IngestStatusEntry>> {
        if !self.owed {
            let throttled = self
                .checked_at
                .is_some_and(|t| now_ms < t.saturating_add(MIN_INTERVAL_MS));
            if !self.dirty || throttled {
                return None;
            }
        }
        let report = figures();
        self.checked_at = Some(now_ms);
        let summary: Vec<(String, u64, u64)> = report
            .iter()
            .map(|e| (e.collection.clone(), e.objects, e.bytes))
            .collect();
        let due = std::mem::take(&mut self.owed) || summary != self.last;
        self.dirty = false;
        if !due || report.is_empty() {
            return None;
        }
        self.last = summary;
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(objects: u64, age: u64) -> Vec<IngestStatusEntry> {
        vec![IngestStatusEntry {
            collection: "Reading".into(),
            objects,
            bytes: objects * 10,
            oldest_age_ms: age,
        }]
    }

    #[test]
    fn reports_once_after_ident_then_changes_at_most_once_per_second() {
        let mut r = IngestReporter::default();
        assert_eq!(r.deadline(), None);
        r.identified();
        assert_eq!(r.deadline(), Some(0));
        assert_eq!(r.poll(5_000, || entry(0, 0)), Some(entry(0, 0)));
        assert_eq!(r.deadline(), None);
        assert_eq!(r.poll(5_001, || panic!("nothing changed")), None);

        // A change right away waits for the second to pass.
        r.touch();
        assert_eq!(r.deadline(), Some(6_000));
        assert_eq!(r.poll(5_500, || panic!("throttled")), None);
        assert_eq!(r.poll(6_000, || entry(3, 1)), Some(entry(3, 1)));

        // Several changes within the second become one report.
        r.touch();
        assert_eq!(r.poll(6_200, || panic!("throttled")), None);
        r.touch();
        assert_eq!(r.poll(6_900, || panic!("throttled")), None);
        assert_eq!(r.poll(7_000, || entry(5, 1_000)), Some(entry(5, 1_000)));

        // Figures that did not change (only their age did) are not sent again.
        r.touch();
        assert_eq!(r.poll(9_000, || entry(5, 3_000)), None);
        assert_eq!(r.deadline(), None);

        // That check counts against the throttle too: the next change waits for the second.
        r.touch();
        assert_eq!(r.deadline(), Some(10_000));
        assert_eq!(r.poll(9_500, || panic!("throttled after a check")), None);
        assert_eq!(r.poll(10_000, || entry(5, 4_000)), None);

        // A reconnect owes a report even when nothing changed, without waiting.
        r.identified();
        assert_eq!(r.poll(10_100, || entry(5, 4_100)), Some(entry(5, 4_100)));
    }

    #[test]
    fn a_client_without_asymmetric_collections_never_reports() {
        let mut r = IngestReporter::default();
        r.identified();
        assert_eq!(r.poll(1, Vec::new), None);
        r.touch();
        assert_eq!(r.poll(5_000, Vec::new), None);
        assert_eq!(r.deadline(), None);
    }
}
