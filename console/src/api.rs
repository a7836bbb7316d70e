//! Everything the console says to the server: admin HTTP requests (key in the
//! `x-eddy-admin-key` header), the event feed WebSocket (key in the first message, never in a
//! URL) that reconnects by itself, and the admin key kept in `sessionStorage`.

use futures_util::{SinkExt, StreamExt};
use gloo_net::http::Request;
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::Message;
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use serde::de::DeserializeOwned;

use crate::model::{parse, Model};

/// The header that carries the admin key.
pub const ADMIN_KEY_HEADER: &str = "x-eddy-admin-key";
const STORAGE_KEY: &str = "eddy-admin-key";
/// The longest wait between reconnection attempts, in milliseconds.
const MAX_BACKOFF_MS: u32 = 5000;

/// Where the feed connection stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedStatus {
    /// Opening the socket.
    Connecting,
    /// Receiving events; `backfill` recent ones came first.
    Live {
        /// How many recent events the server replayed.
        backfill: u64,
    },
    /// The connection dropped; another attempt follows.
    Retrying {
        /// What went wrong.
        reason: String,
        /// Attempts so far.
        attempt: u32,
    },
    /// The server refused the key; no more attempts.
    Refused(String),
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok().flatten()
}

/// The admin key saved in this tab, if any.
pub fn saved_key() -> Option<String> {
    storage()?.get_item(STORAGE_KEY).ok().flatten()
}

/// Keeps the admin key for this tab only (`sessionStorage`).
pub fn save_key(key: &str) {
    if let Some(s) = storage() {
        let _ = s.set_item(STORAGE_KEY, key);
    }
}

/// Forgets the admin key.
pub fn forget_key() {
    if let Some(s) = storage() {
        let _ = s.remove_item(STORAGE_KEY);
    }
}

/// `GET path` with the admin key, decoded from JSON; errors are messages for the user.
pub async fn get_json<T: DeserializeOwned>(path: &str, key: &str) -> Result<T, String> {
    let response = send(Request::get(path), key).await?;
    response
        .json()
        .await
        .map_err(|e| format!("the server's answer is not what the console expects: {e}"))
}

/// `DELETE path` with the admin key; errors are messages for the user.
pub async fn delete(path: &str, key: &str) -> Result<(), String> {
    send(Request::delete(path), key).await.map(drop)
}

/// Sends `request` with the admin key; an answer other than 2xx becomes the server's message.
async fn send(
    request: gloo_net::http::RequestBuilder,
    key: &str,
) -> Result<gloo_net::http::Response, String> {
    let response = request
        .header(ADMIN_KEY_HEADER, key)
        .send()
        .await
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    if !response.ok() {
        let status = response.status();
        let message = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|body| body["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| response.status_text());
        return Err(format!("the server answered {status}: {message}"));
    }
    Ok(response)
}

/// Checks `key` against the server.
pub async fn check_key(key: &str) -> Result<(), String> {
    get_json::<serde_json::Value>("/api/admin/history-count", key)
        .await
        .map(|_| ())
}

fn feed_url() -> Result<String, String> {
    let location = web_sys::window().ok_or("no window")?.location();
    let protocol = location.protocol().map_err(|_| "no page protocol")?;
    let host = location.host().map_err(|_| "no page host")?;
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    Ok(format!("{scheme}://{host}/api/admin/events"))
}

/// One feed connection, until it breaks or `current` is no longer `key` (signed out): returns
/// why it ended, and whether to try again.
async fn feed_once(
    key: &str,
    current: RwSignal<Option<String>>,
    model: RwSignal<Model>,
    status: RwSignal<FeedStatus>,
) -> (String, bool) {
    let url = match feed_url() {
        Ok(url) => url,
        Err(e) => return (e, false),
    };
    let mut socket = match WebSocket::open(&url) {
        Ok(socket) => socket,
        Err(e) => return (format!("cannot open the feed: {e}"), true),
    };
    let login = serde_json::json!({ "admin_key": key }).to_string();
    if let Err(e) = socket.send(Message::Text(login)).await {
        return (format!("the feed closed: {e}"), true);
    }
    while let Some(message) = socket.next().await {
        if current.get_untracked().as_deref() != Some(key) {
            return ("signed out".into(), false);
        }
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Bytes(_)) => continue,
            Err(e) => return (format!("the feed closed: {e}"), true),
        };
        let event = match parse(&text) {
            Ok(event) => event,
            Err(e) => return (e, true),
        };
        match event.kind.as_str() {
            "hello" => {
                // The backfill that follows replays what the server remembers: start afresh.
                model.set(Model::default());
                let backfill = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["backfill"].as_u64())
                    .unwrap_or(0);
                status.set(FeedStatus::Live { backfill });
            }
            "refused" => return (event.message.unwrap_or_default(), false),
            _ => model.update(|m| m.apply(event)),
        }
    }
    ("the server closed the feed".into(), true)
}

/// Keeps the feed connected while `key` is the signed-in key, retrying with backoff.
pub async fn run_feed(
    key: String,
    current: RwSignal<Option<String>>,
    model: RwSignal<Model>,
    status: RwSignal<FeedStatus>,
) {
    let mut attempt: u32 = 0;
    while current.get_untracked().as_deref() == Some(key.as_str()) {
        status.set(FeedStatus::Connecting);
        let (reason, again) = feed_once(&key, current, model, status).await;
        if current.get_untracked().as_deref() != Some(key.as_str()) {
            return;
        }
        if !again {
            status.set(FeedStatus::Refused(reason));
            return;
        }
        if matches!(status.get_untracked(), FeedStatus::Live { .. }) {
            attempt = 0;
        }
        attempt = attempt.saturating_add(1);
        status.set(FeedStatus::Retrying { reason, attempt });
        let wait = 250u32
            .saturating_mul(1 << attempt.min(5))
            .min(MAX_BACKOFF_MS);
        TimeoutFuture::new(wait).await;
    }
}
