//! `SyncSession` (`db.syncSession`): the connection's state, pausing, and waiting for uploads and
//! downloads.

use std::rc::Rc;

use js_sys::{Function, Object, Promise};
use wasm_bindgen::prelude::*;

use crate::driver::{now_ms, pump, wait, Inner, Until, SESSION};

/// The sync session of an open database.
#[wasm_bindgen]
pub struct SyncSession {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for SyncSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSession").finish_non_exhaustive()
    }
}

impl SyncSession {
    pub(crate) fn new(inner: Rc<Inner>) -> SyncSession {
        SyncSession { inner }
    }
}

#[wasm_bindgen]
impl SyncSession {
    /// `"connected"`, `"connecting"` or `"disconnected"`.
    #[wasm_bindgen(getter, js_name = connectionState)]
    pub fn connection_state(&self) -> String {
        self.inner.state.borrow().connection_state().into()
    }

    /// `"active"` (syncing or trying to) or `"inactive"` (paused or closed).
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        let st = self.inner.state.borrow();
        if st.user_paused || st.closed || st.reset_required {
            "inactive"
        } else {
            "active"
        }
        .into()
    }

    /// Whether the session is bound and exchanging changesets.
    #[wasm_bindgen(js_name = isConnected)]
    pub fn is_connected(&self) -> bool {
        let st = self.inner.state.borrow();
        st.conn.session(SESSION).is_some_and(|s| s.is_active())
    }

    /// The Data Ingest upload queue: `{ objects, bytes, oldestPendingAgeMs }` for the asymmetric
    /// objects not yet acknowledged by the server (`oldestPendingAgeMs` is null when empty).
    #[wasm_bindgen(getter, js_name = ingestQueue)]
    pub fn ingest_queue(&self) -> Object {
        let st = self.inner.state.borrow();
        let queue = st
            .conn
            .session(SESSION)
            .map(|s| s.ingest_queue())
            .unwrap_or_default();
        let out = Object::new();
        let set = |name: &str, value: JsValue| {
            // Setting a property on a fresh plain object cannot fail.
            let _ = js_sys::Reflect::set(&out, &JsValue::from_str(name), &value);
        };
        set("objects", JsValue::from_f64(queue.objects as f64));
        set("bytes", JsValue::from_f64(queue.bytes as f64));
        set(
            "oldestPendingAgeMs",
            queue.oldest_timestamp.map_or(JsValue::NULL, |t| {
                JsValue::from_f64(now_ms().saturating_sub(t) as f64)
            }),
        );
        out
    }

    /// Disconnects and stops reconnecting; local writes keep working and wait for `resume`.
    pub fn pause(&self) {
        {
            let mut st = self.inner.state.borrow_mut();
            st.user_paused = true;
            st.conn.pause();
        }
        pump(&self.inner);
    }

    /// Reconnects after `pause` (at once, not after a backoff delay). Does nothing once a client
    /// reset in `"manual"` mode stopped the session.
    pub fn resume(&self) {
        {
            let mut st = self.inner.state.borrow_mut();
            st.user_paused = false;
            if st.reset_required {
                return;
            }
            st.conn.resume(now_ms());
        }
        pump(&self.inner);
    }

    /// Resolves once the server has integrated every local write made so far.
    #[wasm_bindgen(js_name = uploadAllLocalChanges)]
    pub fn upload_all_local_changes(&self) -> Promise {
        let target = {
            let st = self.inner.state.borrow();
            st.conn
                .session(SESSION)
                .map_or(0, |s| s.meta().last_client_version)
        };
        wait(&self.inner, Until::Uploaded(target), JsValue::UNDEFINED)
    }

    /// Resolves once everything the server has now is integrated locally (retried across
    /// reconnects; waits while paused).
    #[wasm_bindgen(js_name = downloadAllServerChanges)]
    pub fn download_all_server_changes(&self) -> Promise {
        wait(
            &self.inner,
            Until::Downloaded {
                request: None,
                connects: 0,
            },
            JsValue::UNDEFINED,
        )
    }

    /// Calls `callback(newState, oldState)` when the connection state changes.
    #[wasm_bindgen(js_name = addConnectionNotification)]
    pub fn add_connection_notification(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(newState: string, oldState: string) => void")]
        callback: Function,
    ) {
        self.inner
            .state
            .borrow_mut()
            .connection_listeners
            .push(callback);
    }

    /// Stops calling a connection callback.
    #[wasm_bindgen(js_name = removeConnectionNotification)]
    pub fn remove_connection_notification(&self, callback: &Function) {
        self.inner
            .state
            .borrow_mut()
            .connection_listeners
            .retain(|f| !Object::is(f, callback));
    }

    /// Calls `callback(estimate)` (1.0 when done) each time the server acknowledges uploads
    /// (`direction` `"upload"`) or a download completes (`"download"`).
    #[wasm_bindgen(js_name = addProgressNotification)]
    pub fn add_progress_notification(
        &self,
        direction: &str,
        #[wasm_bindgen(unchecked_param_type = "(estimate: number) => void")] callback: Function,
    ) {
        self.inner
            .state
            .borrow_mut()
            .progress_listeners
            .push((direction == "upload", callback));
    }

    /// Stops calling a progress callback.
    #[wasm_bindgen(js_name = removeProgressNotification)]
    pub fn remove_progress_notification(&self, callback: &Function) {
        self.inner
            .state
            .borrow_mut()
            .progress_listeners
            .retain(|(_, f)| !Object::is(f, callback));
    }
}
