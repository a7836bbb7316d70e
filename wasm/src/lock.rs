//! One tab at a time: a database is owned by the tab holding its Web Lock. `Eddy.open` asks for
//! the lock without waiting (`ifAvailable`); when another tab holds it, opening fails with a clear
//! error instead of two tabs writing the same IndexedDB database and syncing the same client
//! file. The lock is released by `close()` or when the tab goes away.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// What taking the lock gave.
#[derive(Debug)]
pub(crate) enum Lock {
    /// Held until released.
    Held(HeldLock),
    /// Another tab holds it.
    Taken,
    /// The browser has no Web Locks (an insecure origin or an old browser): not protected.
    Unsupported,
}

/// A lock this tab holds.
#[derive(Debug)]
pub(crate) struct HeldLock {
    /// Ends the lock's callback, which frees the lock.
    release: Function,
    /// The lock request's promise: it resolves once the lock is free again.
    released: Promise,
}

impl HeldLock {
    /// Releases the lock; the returned promise resolves once another request can take it (the
    /// browser frees it a moment after `release`).
    pub(crate) fn release(self) -> Promise {
        let _ = self.release.call0(&JsValue::UNDEFINED);
        self.released
    }
}

/// Tries to take the lock `name` without waiting.
pub(crate) async fn acquire(name: &str) -> Result<Lock, JsValue> {
    let navigator = web_sys::window()
        .map(|w| JsValue::from(w.navigator()))
        .unwrap_or(JsValue::UNDEFINED);
    let locks = Reflect::get(&navigator, &"locks".into()).unwrap_or(JsValue::UNDEFINED);
    if locks.is_undefined() || locks.is_null() {
        return Ok(Lock::Unsupported);
    }
    let request: Function = Reflect::get(&locks, &"request".into())?.dyn_into()?;
    // Resolved by the callback with whether the lock was granted.
    let mut decided_resolve = None;
    let decided = Promise::new(&mut |resolve, _| decided_resolve = Some(resolve));
    // Resolved by `release`, which ends the callback and so frees the lock.
    let mut release = None;
    let held = Promise::new(&mut |resolve, _| release = Some(resolve));
    let (Some(decided_resolve), Some(release)) = (decided_resolve, release) else {
        return Ok(Lock::Unsupported);
    };
    let callback = Closure::once_into_js(move |lock: JsValue| -> JsValue {
        let granted = !lock.is_null() && !lock.is_undefined();
        let _ = decided_resolve.call1(&JsValue::UNDEFINED, &JsValue::from_bool(granted));
        if granted {
            held.into()
        } else {
            JsValue::UNDEFINED
        }
    });
    let options = Object::new();
    Reflect::set(&options, &"ifAvailable".into(), &JsValue::TRUE)?;
    let released = request
        .call3(&locks, &JsValue::from_str(name), &options, &callback)?
        .dyn_into::<Promise>()
        .unwrap_or_else(|_| Promise::resolve(&JsValue::UNDEFINED));
    let granted = JsFuture::from(decided).await?.as_bool().unwrap_or(false);
    Ok(if granted {
        Lock::Held(HeldLock { release, released })
    } else {
        Lock::Taken
    })
}
