//! The login page: the admin key `eddy serve` printed at startup, checked against the server and
//! kept in `sessionStorage` (this tab only), never in a URL.

use leptos::prelude::*;

use crate::{api, console};

/// Asks for the admin key.
#[component]
pub fn Login(
    /// Why the last key stopped working, if it did.
    refused: RwSignal<Option<String>>,
) -> impl IntoView {
    let c = console();
    let key = RwSignal::new(String::new());
    let checking = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let entered = key.get_untracked().trim().to_owned();
        if entered.is_empty() {
            error.set(Some(
                "enter the admin key eddy serve printed at startup".into(),
            ));
            return;
        }
        checking.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::check_key(&entered).await {
                Ok(()) => {
                    api::save_key(&entered);
                    refused.set(None);
                    c.key.set(Some(entered));
                }
                Err(e) => error.set(Some(e)),
            }
            checking.set(false);
        });
    };
    view! {
        <section class="login" data-testid="page-login">
            <h1>"Eddy console"</h1>
            <p>"Sign in with the admin key " <code>"eddy serve"</code> " printed at startup."</p>
            <form on:submit=submit>
                <input
                    type="password"
                    placeholder="admin key"
                    autocomplete="off"
                    data-testid="admin-key"
                    prop:value=move || key.get()
                    on:input=move |ev| key.set(event_target_value(&ev))
                />
                <button type="submit" data-testid="login" disabled=move || checking.get()>
                    {move || if checking.get() { "Checking…" } else { "Sign in" }}
                </button>
            </form>
            {move || {
                error
                    .get()
                    .or_else(|| refused.get())
                    .map(|e| view! { <p class="error" data-testid="login-error">{e}</p> })
            }}
        </section>
    }
}
