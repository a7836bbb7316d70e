//! The overview: counters and live charts of messages/s, changesets/s, sessions and ingest.

use leptos::prelude::*;

use crate::console;
use crate::widgets::Chart;

/// Counters and charts.
#[component]
pub fn Overview() -> impl IntoView {
    let c = console();
    let series = move |pick: fn(&crate::model::Rates) -> Vec<u64>| {
        Signal::derive(move || c.model.with(|m| pick(&m.rates)))
    };
    let counter = move |label: &'static str, testid: &'static str, value: Signal<u64>| {
        view! {
            <div class="counter" data-testid=testid>
                <span class="value">{move || value.get()}</span>
                <span class="label">{label}</span>
            </div>
        }
    };
    view! {
        <section data-testid="page-overview">
            <h1>"Overview"</h1>
            <div class="counters">
                {counter(
                    "sessions connected",
                    "counter-sessions",
                    Signal::derive(move || c.model.with(|m| m.open_sessions() as u64)),
                )}
                {counter(
                    "messages",
                    "counter-messages",
                    Signal::derive(move || c.model.with(|m| m.totals.messages)),
                )}
                {counter(
                    "changesets",
                    "counter-changesets",
                    Signal::derive(move || c.model.with(|m| m.totals.changesets)),
                )}
                {counter(
                    "objects ingested",
                    "counter-ingested",
                    Signal::derive(move || c.model.with(|m| m.totals.ingested)),
                )}
                {counter(
                    "errors sent",
                    "counter-errors",
                    Signal::derive(move || c.model.with(|m| m.totals.errors)),
                )}
                {counter(
                    "feed events lost",
                    "counter-missed",
                    Signal::derive(move || c.model.with(|m| m.totals.missed)),
                )}
            </div>
            <p class="note">
                "Counted since the console connected, starting from the events the server still remembers."
            </p>
            <div class="charts">
                <Chart title="messages/s" testid="chart-messages" values=series(|r| r.messages.iter().copied().collect()) />
                <Chart title="changesets/s" testid="chart-changesets" values=series(|r| r.changesets.iter().copied().collect()) />
                <Chart title="connected sessions" testid="chart-sessions" values=series(|r| r.sessions.iter().copied().collect()) />
                <Chart title="ingest objects/s" testid="chart-ingest" values=series(|r| r.ingest.iter().copied().collect()) />
            </div>
            <h2>"Recent errors"</h2>
            {move || {
                let errors = c.model.with(|m| m.errors.iter().rev().take(20).cloned().collect::<Vec<_>>());
                if errors.is_empty() {
                    view! { <p class="note">"No errors sent to clients."</p> }.into_any()
                } else {
                    view! {
                        <ul data-testid="errors">
                            {errors
                                .into_iter()
                                .map(|e| {
                                    view! {
                                        <li>
                                            {crate::widgets::clock(e.at)} " connection "
                                            {e.connection.unwrap_or(0)} " session " {e.session.unwrap_or(0)} ": "
                                            {e.code.unwrap_or_default()} " — " {e.message.unwrap_or_default()}
                                        </li>
                                    }
                                })
                                .collect_view()}
                        </ul>
                    }
                        .into_any()
                }
            }}
        </section>
    }
}
