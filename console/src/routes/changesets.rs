//! Changesets: the server history as a live timeline, filterable by collection, user, client
//! and object; each entry shows its instructions and merge decisions. A version the timeline no
//! longer holds (older than the feed's ring) is read from the server's history instead.

use leptos::prelude::*;
use serde::Deserialize;

use crate::model::{bytes_text, Event};
use crate::widgets::{clock, load, show_load, ChangesetItem, Instructions};
use crate::{api, console, decode};

/// What the filters ask for; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangesetFilter {
    /// A collection name.
    pub collection: String,
    /// A user id.
    pub user: String,
    /// A client file ident.
    pub client: String,
    /// An object as `Collection/key` (or part of it).
    pub object: String,
    /// A server version.
    pub version: String,
}

impl ChangesetFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        let collection = self.collection.trim();
        let user = self.user.trim();
        let client = self.client.trim();
        let object = self.object.trim();
        let version = self.version.trim().trim_start_matches('v');
        (version.is_empty()
            || event.server_version.map(|v| v.to_string()).as_deref() == Some(version))
            && (collection.is_empty() || event.collections.iter().any(|c| c == collection))
            && (user.is_empty() || event.user.as_deref() == Some(user))
            && (client.is_empty() || event.client.map(|c| c.to_string()).as_deref() == Some(client))
            && (object.is_empty() || event.objects.iter().any(|o| o.contains(object)))
    }
}

fn text_filter(
    label: &'static str,
    testid: &'static str,
    value: RwSignal<String>,
) -> impl IntoView {
    view! {
        <label>
            {label}
            <input
                data-testid=testid
                prop:value=move || value.get()
                on:input=move |ev| value.set(event_target_value(&ev))
            />
        </label>
    }
}

/// The version a filter asks for, when it is a whole number.
pub fn wanted_version(filter: &str) -> Option<u64> {
    filter.trim().trim_start_matches('v').parse().ok()
}

/// A committed changeset as `GET /api/admin/changesets/{version}` answers it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
struct StoredEntry {
    server_version: u64,
    origin_file_ident: u64,
    user: Option<String>,
    client_version: u64,
    origin_timestamp: u64,
    size: u64,
    original_size: u64,
    body: String,
}

/// A changeset read from the server's history: its instructions, but no merge decisions, which
/// only the feed carries at integration time.
#[component]
fn StoredChangeset(version: u64) -> impl IntoView {
    let admin = console().key_text();
    let path = format!("/api/admin/changesets/{version}");
    let entry = load(async move { api::get_json::<StoredEntry>(&path, &admin).await });
    view! {
        <div class="stored" data-testid="stored-changeset">
            {show_load(entry, |e: StoredEntry| {
                view! {
                    <p>
                        <strong>"v" {e.server_version}</strong>
                        " from client " {e.origin_file_ident} " ("
                        {e.user.unwrap_or_else(|| "unknown user".into())} "), client version "
                        {e.client_version} ", " {clock(e.origin_timestamp)} ", "
                        {bytes_text(e.size)} " encoded, " {bytes_text(e.original_size)} " uncompressed"
                    </p>
                    <Instructions lines=decode::changeset_lines_base64(&e.body) testid="changeset-instructions" />
                    <p class="note">
                        "Read from the server's history: the console's timeline no longer holds this changeset, "
                        "and its merge decisions were shown only while it was being integrated."
                    </p>
                }
            })}
        </div>
    }
}

/// The changeset timeline.
#[component]
pub fn Changesets() -> impl IntoView {
    let c = console();
    let collection = RwSignal::new(String::new());
    let user = RwSignal::new(String::new());
    let client = RwSignal::new(String::new());
    let object = RwSignal::new(String::new());
    // Shared with merge decisions, whose links to a concurrent changeset set it.
    let version = c.changeset_version;
    let shown = Signal::derive(move || {
        let filter = ChangesetFilter {
            collection: collection.get(),
            user: user.get(),
            client: client.get(),
            object: object.get(),
            version: version.get(),
        };
        c.model.with(|m| {
            m.changesets
                .iter()
                .rev()
                .filter(|e| filter.matches(e))
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    // A version the timeline lacks is fetched once per version, not on every feed event.
    let missing = Memo::new(move |_| {
        shown
            .with(|s| s.is_empty())
            .then(|| wanted_version(&version.get()))
            .flatten()
    });
    view! {
        <section data-testid="page-changesets">
            <h1>"Changesets"</h1>
            <div class="filters">
                {text_filter("collection", "filter-collection", collection)}
                {text_filter("user", "filter-user", user)}
                {text_filter("client", "filter-client", client)}
                {text_filter("object", "filter-object", object)}
                {text_filter("version", "filter-version", version)}
            </div>
            <p class="note">
                "Newest first; click a changeset for its instructions and merge decisions. "
                "Sizes are the stored body's, as encoded (compressed above 1 KiB when that is smaller) and uncompressed."
            </p>
            <Show
                when=move || !shown.get().is_empty()
                fallback=move || match missing.get() {
                    Some(v) => view! { <StoredChangeset version=v /> }.into_any(),
                    None => view! { <p class="note" data-testid="changesets-empty">"No changesets match yet."</p> }.into_any(),
                }
            >
                <ul class="timeline" data-testid="changesets">
                    <For each=move || shown.get() key=|e| e.seq let:e>
                        // A changeset asked for by its version opens at once.
                        <ChangesetItem open={!version.get_untracked().trim().is_empty()} event=e />
                    </For>
                </ul>
            </Show>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_every_given_field() {
        let event = Event {
            collections: vec!["Item".into()],
            user: Some("u1".into()),
            client: Some(7),
            objects: vec!["Item/1".into()],
            ..Event::default()
        };
        assert!(ChangesetFilter::default().matches(&event));
        let mut filter = ChangesetFilter {
            collection: "Item".into(),
            client: " 7 ".into(),
            object: "Item/1".into(),
            user: "u1".into(),
            version: String::new(),
        };
        assert!(filter.matches(&event));
        filter.client = "8".into();
        assert!(!filter.matches(&event));
        filter.client.clear();
        filter.object = "Item/2".into();
        assert!(!filter.matches(&event));
        filter.object.clear();
        let versioned = Event {
            server_version: Some(12),
            ..event.clone()
        };
        filter.version = "v12".into();
        assert!(filter.matches(&versioned));
        filter.version = "13".into();
        assert!(!filter.matches(&versioned));
        assert_eq!(wanted_version(" v12 "), Some(12));
        assert_eq!(wanted_version("12"), Some(12));
        assert_eq!(wanted_version(""), None);
        assert_eq!(wanted_version("latest"), None);
    }
}
