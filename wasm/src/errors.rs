//! Errors handed to JavaScript: instances of `Error` subclasses (`SyncError`,
//! `CompensatingWriteError`, `StorageError`, `AuthError`, all extending `EddyError`) carrying a
//! `code` and an `action` from the protocol's error table (or an Eddy-side code such as
//! `"storage-quota"`).

use eddy_core::client::SyncError;
use eddy_core::protocol::ErrorAction;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = errorClass)]
    fn error_class(
        kind: &str,
        message: &str,
        code: JsValue,
        action: &str,
        extra: JsValue,
    ) -> JsValue;
}

/// An `EddyError` (no protocol code) with an action such as `"applicationBug"`.
pub(crate) fn eddy_error(code: &str, action: &str, message: &str) -> JsValue {
    error_class("eddy", message, code.into(), action, JsValue::UNDEFINED)
}

/// An application mistake: a bad argument, a write outside `write()`, a closed database.
pub(crate) fn usage(message: impl AsRef<str>) -> JsValue {
    eddy_error("usage", "applicationBug", message.as_ref())
}

/// A storage failure; quota errors get their own code.
pub(crate) fn storage(message: &str) -> JsValue {
    // Byte windows rather than `str::contains`, whose substring search would link the
    // standard library's string slicing panic (and with it `char`'s `Debug`).
    let quota = message
        .as_bytes()
        .windows(5)
        .any(|w| w.eq_ignore_ascii_case(b"quota"));
    let (code, text) = if quota {
        (
            "storage-quota",
            format!("the browser refused to store more data (quota exceeded): free space or ask the user to allow persistent storage; {message}"),
        )
    } else {
        ("storage", format!("IndexedDB failed: {message}"))
    };
    error_class("storage", &text, code.into(), "warning", JsValue::UNDEFINED)
}

/// A sign-in failure (the server's message).
pub(crate) fn auth(status: u16, message: &str) -> JsValue {
    error_class("auth", message, status.into(), "logOut", JsValue::UNDEFINED)
}

/// The JavaScript name of an action.
pub(crate) fn action_name(action: ErrorAction) -> &'static str {
    match action {
        ErrorAction::Transient => "transient",
        ErrorAction::ClientReset => "clientReset",
        ErrorAction::RefreshToken => "refreshToken",
        ErrorAction::LogOut => "logOut",
        ErrorAction::ApplicationBug => "applicationBug",
        ErrorAction::Warning => "warning",
        _ => "unknown",
    }
}

/// A `SyncError`, or a `CompensatingWriteError` listing the refused writes.
pub(crate) fn sync(error: &SyncError) -> JsValue {
    let code = JsValue::from(error.code.number());
    let action = action_name(error.action);
    match &error.compensating {
        Some(compensating) => {
            let writes: js_sys::Array = compensating
                .rejected
                .iter()
                .map(|w| {
                    let o = js_sys::Object::new();
                    let _ = js_sys::Reflect::set(
                        &o,
                        &"objectName".into(),
                        &w.collection.as_str().into(),
                    );
                    let _ = js_sys::Reflect::set(&o, &"primaryKey".into(), &w.key.as_str().into());
                    let _ = js_sys::Reflect::set(&o, &"reason".into(), &w.reason.as_str().into());
                    JsValue::from(o)
                })
                .collect();
            error_class("compensating", &error.message, code, action, writes.into())
        }
        None => error_class("sync", &error.message, code, action, JsValue::UNDEFINED),
    }
}
