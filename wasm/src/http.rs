//! JSON POSTs to the server's `/api/auth/*` routes through `fetch`.

use js_sys::{Object, Reflect, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, RequestMode, Response};

use crate::errors;

/// POSTs the object of string `fields` as JSON to `url`; returns the parsed JSON reply (`null` for
/// an empty one, the text itself for one that is not JSON). Non-2xx replies become `AuthError`s
/// carrying the server's message and the HTTP status.
pub(crate) async fn post_json(url: &str, fields: &[(&str, &str)]) -> Result<JsValue, JsValue> {
    let body = Object::new();
    for (name, value) in fields {
        Reflect::set(&body, &JsValue::from_str(name), &JsValue::from_str(value))?;
    }
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_mode(RequestMode::Cors);
    init.set_body(&JSON::stringify(&body)?.into());
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
    let json = if text.is_empty() {
        JsValue::NULL
    } else {
        JSON::parse(&text).unwrap_or_else(|_| JsValue::from_str(&text))
    };
    if !response.ok() {
        let message = reply_text(&json, "message")
            .unwrap_or_else(|| format!("the server answered {}", response.status()));
        return Err(errors::auth(response.status(), &message));
    }
    Ok(json)
}

/// The string member `name` of a JSON reply, if the reply is an object that has one.
pub(crate) fn reply_text(reply: &JsValue, name: &str) -> Option<String> {
    member(reply, name)?.as_string()
}

/// The member `name` of a JSON reply, if the reply is an object.
pub(crate) fn member(reply: &JsValue, name: &str) -> Option<JsValue> {
    if !reply.is_object() {
        return None;
    }
    Reflect::get(reply, &JsValue::from_str(name)).ok()
}

/// The message of a JavaScript error, or its text.
pub(crate) fn js_text(e: &JsValue) -> String {
    if let Some(error) = e.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}
