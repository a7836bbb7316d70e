//! Sessions: a live table; clicking a session opens its message timeline (both directions),
//! each message expandable to its decoded fields and changeset instructions.

use leptos::prelude::*;

use crate::console;
use crate::widgets::{clock, MessageItem};

/// The sessions table and the selected session's timeline.
#[component]
pub fn Sessions() -> impl IntoView {
    let c = console();
    let selected = RwSignal::new(None::<(u64, u64)>);
    let rows = move || {
        let sessions = c
            .model
            .with(|m| m.sessions.iter().rev().cloned().collect::<Vec<_>>());
        sessions
            .into_iter()
            .map(|s| {
                let id = (s.connection, s.session);
                view! {
                    <tr
                        data-testid="session-row"
                        class:selected=move || selected.get() == Some(id)
                        class:ended=s.ended
                        on:click=move |_| selected.set(Some(id))
                    >
                        <td>{s.connection} "/" {s.session}</td>
                        <td>{s.user}</td>
                        <td data-testid="session-client">{s.client}</td>
                        <td>{s.peer}</td>
                        <td>{s.protocol}</td>
                        <td>{clock(s.opened_at)}</td>
                        <td>{if s.ended { "ended" } else { "open" }}</td>
                        <td>{s.messages_in} " / " {s.messages_out}</td>
                        <td class="subs">{s.subscriptions}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    let timeline = move || {
        selected.get().map(|(connection, session)| {
            let messages =
                Signal::derive(move || c.model.with(|m| m.session_messages(connection, session)));
            view! {
                <h2>"Messages of session " {connection} "/" {session}</h2>
                <p class="note">"Newest last; click a message to decode it."</p>
                <ul class="timeline" data-testid="timeline">
                    <For each=move || messages.get() key=|m| m.seq let:m>
                        <MessageItem event=m />
                    </For>
                </ul>
            }
        })
    };
    view! {
        <section data-testid="page-sessions">
            <h1>"Sessions"</h1>
            <Show
                when=move || c.model.with(|m| !m.sessions.is_empty())
                fallback=|| view! { <p class="note" data-testid="sessions-empty">"No sessions yet: connect a client."</p> }
            >
                <table class="table" data-testid="sessions">
                    <thead>
                        <tr>
                            <th>"connection/session"</th>
                            <th>"user"</th>
                            <th>"client file"</th>
                            <th>"peer"</th>
                            <th>"protocol"</th>
                            <th>"opened"</th>
                            <th>"state"</th>
                            <th>"messages in / out"</th>
                            <th>"subscriptions"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </Show>
            {timeline}
        </section>
    }
}
