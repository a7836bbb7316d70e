//! JSON POSTs to the server's `/api/auth/*` routes through `fetch`.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, RequestMode, Response};

use crate::errors;

/// POSTs `body` as JSON to `url`; returns the parsed JSON reply (or `null` for an empty one).
/// Non-2xx replies become `AuthError`s carrying the server's message and the HTTP status.
pub(crate) async fn post_json(
    url: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, JsValue> {
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_mode(RequestMode::Cors);
    init.set_body(&JsValue::from_str(&body.to_string()));
    let request = Request::new_with_str_and_init(url, &init)?;
    request.headers().set("content-type", "application/json")?;
    let window =
        web_sys::window().ok_or_else(|| errors::usage("eddy-sync needs a browser window"))?;
    let reply = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| {
            errors::auth(
                0,
                &format!(
                    "cannot reach the server at {url}: {}; check baseUrl and that the server is running",
                    js_text(&e)
                ),
            )
        })?;
    let response: Response = reply.dyn_into()?;
    let text = JsFuture::from(response.text()?)
        .await?
        .as_string()
        .unwrap_or_default();
    let json: serde_json::Value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    if !response.ok() {
        let message = json
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the server answered {}", response.status()));
        return Err(errors::auth(response.status(), &message));
    }
    Ok(json)
}

/// The message of a JavaScript error, or its text.
pub(crate) fn js_text(e: &JsValue) -> String {
    if let Some(error) = e.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}
