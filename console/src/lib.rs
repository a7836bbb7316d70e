//! `eddy-console`: Eddy's dev console, a Leptos app that runs in the browser (served by
//! `eddy serve` at `/console`).
//!
//! - [`api`] talks to the server: admin HTTP requests and the live event feed.
//! - [`model`] holds what the feed told: sessions, messages, changesets, counters and rates.
//! - [`decode`] turns raw frames and changesets into readable text with eddy-core's decoders.
//! - [`routes`] has one page per file; [`widgets`] the pieces pages share.
//!
//! The admin key lives in `sessionStorage` and travels only in a header or the feed's first
//! message, never in a URL.

#![deny(missing_docs)]

pub mod api;
pub mod decode;
pub mod model;
pub mod routes;
pub mod widgets;

use leptos::prelude::*;

use crate::api::FeedStatus;
use crate::model::Model;

/// The console's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// Counters and live charts.
    Overview,
    /// The live sessions table and message timelines.
    Sessions,
    /// The changeset timeline.
    Changesets,
    /// Collections, documents and a document's history.
    Data,
    /// The schema and roles.
    Schema,
    /// Asymmetric collections and ingest.
    Ingest,
}

impl Page {
    /// Every page, in menu order.
    pub const ALL: [Page; 6] = [
        Page::Overview,
        Page::Sessions,
        Page::Changesets,
        Page::Data,
        Page::Schema,
        Page::Ingest,
    ];

    /// The page's name in the URL fragment and in `data-testid`s.
    pub fn slug(self) -> &'static str {
        match self {
            Page::Overview => "overview",
            Page::Sessions => "sessions",
            Page::Changesets => "changesets",
            Page::Data => "data",
            Page::Schema => "schema",
            Page::Ingest => "ingest",
        }
    }

    /// The page's title.
    pub fn title(self) -> &'static str {
        match self {
            Page::Overview => "Overview",
            Page::Sessions => "Sessions",
            Page::Changesets => "Changesets",
            Page::Data => "Data",
            Page::Schema => "Schema & roles",
            Page::Ingest => "Ingest",
        }
    }

    /// The page a URL fragment (`#sessions`) names; the overview otherwise.
    pub fn from_hash(hash: &str) -> Page {
        let slug = hash.trim_start_matches('#');
        Page::ALL
            .into_iter()
            .find(|p| p.slug() == slug)
            .unwrap_or(Page::Overview)
    }
}

/// What every page shares, provided as context.
#[derive(Clone, Copy, Debug)]
pub struct Console {
    /// The admin key, once signed in.
    pub key: RwSignal<Option<String>>,
    /// What the feed told so far.
    pub model: RwSignal<Model>,
    /// The feed connection.
    pub status: RwSignal<FeedStatus>,
    /// The page shown.
    pub page: RwSignal<Page>,
    /// The Changesets page's server version filter, which a merge decision's link to the
    /// concurrent changeset sets.
    pub changeset_version: RwSignal<String>,
}

impl Console {
    /// A console with nothing known yet, signed in with `key` if given.
    pub fn new(key: Option<String>, page: Page) -> Self {
        Console {
            key: RwSignal::new(key),
            model: RwSignal::new(Model::default()),
            status: RwSignal::new(FeedStatus::Connecting),
            page: RwSignal::new(page),
            changeset_version: RwSignal::new(String::new()),
        }
    }

    /// Shows the changeset of server version `version` on the Changesets page.
    pub fn show_changeset(&self, version: u64) {
        self.changeset_version.set(version.to_string());
        self.page.set(Page::Changesets);
    }

    /// The signed-in key, or an empty string.
    pub fn key_text(&self) -> String {
        self.key.get_untracked().unwrap_or_default()
    }
}

/// The console in the context; pages are only mounted under [`App`] (or a test that provides one).
pub fn console() -> Console {
    use_context::<Console>().unwrap_or_else(|| Console::new(None, Page::Overview))
}

fn current_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

fn feed_status_text(status: &FeedStatus) -> String {
    match status {
        FeedStatus::Connecting => "connecting to the event feed…".into(),
        FeedStatus::Live { backfill } => format!("live ({backfill} recent events replayed)"),
        FeedStatus::Retrying { reason, attempt } => {
            format!("reconnecting (attempt {attempt}): {reason}")
        }
        FeedStatus::Refused(reason) => format!("the feed refused this key: {reason}"),
    }
}

/// The header: page links, the feed's state and sign-out.
#[component]
fn Shell() -> impl IntoView {
    let c = console();
    let links = Page::ALL
        .into_iter()
        .map(|page| {
            view! {
                <a
                    href=format!("#{}", page.slug())
                    data-testid=format!("nav-{}", page.slug())
                    class:active=move || c.page.get() == page
                    on:click=move |_| c.page.set(page)
                >
                    {page.title()}
                </a>
            }
        })
        .collect_view();
    let sign_out = move |_| {
        api::forget_key();
        c.key.set(None);
    };
    view! {
        <header>
            <strong>"Eddy console"</strong>
            <nav>{links}</nav>
            <span
                data-testid="feed-status"
                class=move || match c.status.get() {
                    FeedStatus::Live { .. } => "status live",
                    FeedStatus::Refused(_) => "status refused",
                    _ => "status waiting",
                }
            >
                {move || feed_status_text(&c.status.get())}
            </span>
            <button data-testid="sign-out" on:click=sign_out>
                "Sign out"
            </button>
        </header>
        <main>
            {move || match c.page.get() {
                Page::Overview => view! { <routes::overview::Overview /> }.into_any(),
                Page::Sessions => view! { <routes::sessions::Sessions /> }.into_any(),
                Page::Changesets => view! { <routes::changesets::Changesets /> }.into_any(),
                Page::Data => view! { <routes::data::Data /> }.into_any(),
                Page::Schema => view! { <routes::schema::SchemaPage /> }.into_any(),
                Page::Ingest => view! { <routes::ingest::Ingest /> }.into_any(),
            }}
        </main>
    }
}

/// The whole console: the login page until a key is accepted, then the pages.
#[component]
pub fn App() -> impl IntoView {
    let c = Console::new(api::saved_key(), Page::from_hash(&current_hash()));
    provide_context(c);
    // One feed per accepted key; it stops by itself when the key changes.
    Effect::new(move |_| {
        if let Some(key) = c.key.get() {
            leptos::task::spawn_local(api::run_feed(key, c.key, c.model, c.status));
        }
    });
    // A refused key (changed on the server) signs out with the reason shown on the login page.
    let refused = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        if let FeedStatus::Refused(reason) = c.status.get() {
            api::forget_key();
            refused.set(Some(reason));
            c.key.set(None);
            c.status.set(FeedStatus::Connecting);
        }
    });
    gloo_timers::callback::Interval::new(1000, move || c.model.update(Model::tick)).forget();
    view! {
        {move || match c.key.get() {
            None => view! { <routes::login::Login refused=refused /> }.into_any(),
            Some(_) => view! { <Shell /> }.into_any(),
        }}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_through_the_url_fragment() {
        for page in Page::ALL {
            assert_eq!(Page::from_hash(&format!("#{}", page.slug())), page);
        }
        assert_eq!(Page::from_hash(""), Page::Overview);
        assert_eq!(Page::from_hash("#nope"), Page::Overview);
    }
}
