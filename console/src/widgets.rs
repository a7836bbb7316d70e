//! Pieces the pages share: loading states, charts, expandable messages and changesets.

use std::future::Future;

use leptos::prelude::*;

use crate::decode;
use crate::model::{Decision, DecisionSide, Event};

/// The state of something fetched from the server.
#[derive(Clone, Debug, PartialEq)]
pub enum Load<T> {
    /// Not here yet.
    Loading,
    /// Here.
    Ready(T),
    /// Failed, with a message for the user.
    Failed(String),
}

/// Starts `fetch` and returns a signal that follows it.
pub fn load<T, F>(fetch: F) -> RwSignal<Load<T>>
where
    T: Send + Sync + 'static,
    F: Future<Output = Result<T, String>> + 'static,
{
    let state = RwSignal::new(Load::Loading);
    leptos::task::spawn_local(async move {
        state.set(match fetch.await {
            Ok(value) => Load::Ready(value),
            Err(e) => Load::Failed(e),
        });
    });
    state
}

/// Shows a [`Load`]: a loading line, an error line, or `ready` of the value.
pub fn show_load<T, V>(
    state: RwSignal<Load<T>>,
    ready: impl Fn(T) -> V + Send + Sync + 'static,
) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    V: IntoView + 'static,
{
    move || match state.get() {
        Load::Loading => {
            view! { <p class="loading" data-testid="loading">"Loading…"</p> }.into_any()
        }
        Load::Failed(e) => view! { <p class="error" data-testid="load-error">{e}</p> }.into_any(),
        Load::Ready(value) => ready(value).into_any(),
    }
}

/// `HH:MM:SS.mmm` (UTC) of milliseconds since the Unix epoch.
pub fn clock(at: u64) -> String {
    let ms = at % 1000;
    let s = at / 1000;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

/// The points of a line chart of `values` in a 300×60 box, scaled to the largest value.
pub fn chart_points(values: &[u64]) -> String {
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = 300.0 / (crate::model::SAMPLES.saturating_sub(1).max(1)) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                60.0 - (*v as f64 / max) * 56.0
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A live line chart with its title, latest value and an optional note.
#[component]
pub fn Chart(
    /// The chart's title.
    title: &'static str,
    /// Its `data-testid`.
    testid: &'static str,
    /// The samples, oldest first.
    values: Signal<Vec<u64>>,
    /// A note under the chart.
    #[prop(optional)]
    note: Option<&'static str>,
) -> impl IntoView {
    view! {
        <figure class="chart" data-testid=testid>
            <figcaption>
                {title} ": "
                <strong>{move || values.get().last().copied().unwrap_or(0)}</strong>
            </figcaption>
            <svg viewBox="0 0 300 60" preserveAspectRatio="none">
                <polyline points=move || chart_points(&values.get()) />
            </svg>
            {note.map(|n| view! { <p class="note">{n}</p> })}
        </figure>
    }
}

/// Instruction lines as a list.
#[component]
pub fn Instructions(
    /// One line per instruction.
    lines: Vec<String>,
    /// Its `data-testid`.
    #[prop(optional)]
    testid: Option<&'static str>,
) -> impl IntoView {
    view! {
        <ol class="instructions" data-testid=testid.unwrap_or("instructions")>
            {lines.into_iter().map(|l| view! { <li><code>{l}</code></li> }).collect_view()}
        </ol>
    }
}

/// A protocol message in a timeline; click to show its decoded fields and changesets.
#[component]
pub fn MessageItem(
    /// The feed's message event.
    event: Event,
) -> impl IntoView {
    let open = RwSignal::new(false);
    let direction = event.direction.clone().unwrap_or_default();
    let arrow = if direction == "in" {
        "client → server"
    } else {
        "server → client"
    };
    let kind = event.message_type.clone().unwrap_or_default();
    let testid = format!("message-{kind}");
    let raw = event.raw.clone();
    let omitted = event
        .raw_omitted
        .clone()
        .unwrap_or_else(|| "the feed sent no bytes for this frame".into());
    let size = event.message_size_text();
    view! {
        <li class="message" data-testid=testid>
            <button class="row" on:click=move |_| open.update(|o| *o = !*o)>
                <span class="time">{clock(event.at)}</span>
                <span class=format!("dir {direction}")>{arrow}</span>
                <strong>{kind}</strong>
                <span class="size" data-testid="message-size">{size}</span>
            </button>
            <Show when=move || open.get()>
                {
                    let direction = direction.clone();
                    let raw = raw.clone();
                    let omitted = omitted.clone();
                    move || match raw.as_deref().map(|raw| decode::message(&direction, raw)) {
                        None => view! { <p class="note">{omitted.clone()}</p> }.into_any(),
                        Some(Ok(view)) => {
                            view! {
                                <div class="decoded" data-testid="message-decoded">
                                    <table>
                                        {view
                                            .fields
                                            .into_iter()
                                            .map(|(k, v)| view! { <tr><th>{k}</th><td>{v}</td></tr> })
                                            .collect_view()}
                                    </table>
                                    {view
                                        .changesets
                                        .into_iter()
                                        .map(|c| {
                                            view! {
                                                <div class="changeset">
                                                    <p>{c.heading}</p>
                                                    <Instructions lines=c.instructions />
                                                </div>
                                            }
                                        })
                                        .collect_view()}
                                </div>
                            }
                                .into_any()
                        }
                        Some(Err(e)) => view! { <p class="error">{e}</p> }.into_any(),
                    }
                }
            </Show>
        </li>
    }
}

fn side_text(side: &DecisionSide) -> String {
    let original = decode::changeset_lines_base64(&side.original).join("; ");
    let outcome = match (&side.outcome[..], &side.rewritten) {
        ("rewritten", Some(r)) => {
            format!(
                "rewritten to {}",
                decode::changeset_lines_base64(r).join("; ")
            )
        }
        (other, _) => other.to_owned(),
    };
    let changeset = match side.server_version {
        Some(version) => format!("v{version} "),
        None => String::new(),
    };
    format!(
        "{changeset}instruction #{}: {original} — {outcome}",
        side.instruction
    )
}

/// One merge decision: what happened, naming the concurrent changeset (a link to it on the
/// Changesets page) and the rule, then what it did to each side.
#[component]
pub fn DecisionItem(
    /// The decision.
    decision: Decision,
) -> impl IntoView {
    let c = crate::console();
    let link = decision.theirs.server_version.map(|version| {
        view! {
            <a
                href="#changesets"
                data-testid="decision-link"
                on:click=move |_| c.show_changeset(version)
            >
                {format!("open v{version}")}
            </a>
        }
    });
    view! {
        <li class="decision" data-testid="merge-decision">
            <strong data-testid="decision-headline">{decision.headline()}</strong>
            " "
            {link}
            <div>"this changeset: " {side_text(&decision.ours)}</div>
            <div>"concurrent: " {side_text(&decision.theirs)}</div>
        </li>
    }
}

/// An integrated changeset in a timeline; click to show its instructions and merge decisions.
#[component]
pub fn ChangesetItem(
    /// The feed's changeset event.
    event: Event,
    /// Whether it starts open.
    #[prop(optional)]
    open: bool,
) -> impl IntoView {
    let open = RwSignal::new(open);
    let decisions = event.decisions.clone();
    let count = decisions.len();
    let instructions = event.instructions.clone().unwrap_or_default();
    view! {
        <li class="changeset-item" data-testid="changeset">
            <button class="row" data-testid="changeset-row" on:click=move |_| open.update(|o| *o = !*o)>
                <span class="time">{clock(event.at)}</span>
                <strong>"v" {event.server_version.unwrap_or(0)}</strong>
                <span>"client " {event.client.unwrap_or(0)}</span>
                <span>{event.user.clone().unwrap_or_else(|| "(unknown user)".into())}</span>
                <span>{event.objects.join(", ")}</span>
                <span class="size" data-testid="changeset-size">{event.changeset_size_text()}</span>
                <span class="badge">{count} " merge decisions"</span>
            </button>
            <Show when=move || open.get()>
                <div class="decoded">
                    <Instructions
                        lines=decode::changeset_lines_base64(&instructions)
                        testid="changeset-instructions"
                    />
                    {if decisions.is_empty() {
                        view! { <p class="note">"No concurrent writes needed deciding."</p> }.into_any()
                    } else {
                        view! {
                            <ul class="decisions">
                                {decisions
                                    .clone()
                                    .into_iter()
                                    .map(|d| view! { <DecisionItem decision=d /> })
                                    .collect_view()}
                            </ul>
                        }
                            .into_any()
                    }}
                </div>
            </Show>
        </li>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_chart_points() {
        assert_eq!(clock(3_723_004), "01:02:03.004");
        assert_eq!(chart_points(&[]), "");
        assert_eq!(chart_points(&[0, 2]), "0.0,60.0 5.1,4.0");
    }
}
