//! The browser driver of the core's sans-IO client: one `ClientConnection` carrying one
//! `ClientSession`, moved by browser events (WebSocket open/message/close, one `setTimeout` for
//! the connection's next deadline, `online`/`offline`, local writes).
//!
//! Every input ends with [`pump`], which runs the connection's socket actions, collects the
//! session's events, and sends the frames it wants sent. Storage writes (`SessionEvent::Persist`)
//! are queued and written to IndexedDB in the background, several at a time in one transaction
//! (group commit); a frame is held back until every storage write emitted before it is durable, so
//! the server never sees a change (or acknowledges a download) the browser could still lose.
//!
//! JavaScript callbacks (listeners, promise resolutions) are collected while the state is
//! borrowed and called after the borrow ends, so a callback may use the database freely.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::rc::{Rc, Weak};

use eddy_core::client::{
    ClientConnection, ConnectionState, SessionEvent, StorageWrite, SubscriptionState,
};
use eddy_core::protocol::{
    decode_server_message, encode_client_message, ErrorAction, MessageLimits, SessionIdent,
};
use eddy_core::schema::Schema;
use eddy_core::store::{Changes, Store, SuspendedWrite};
use eddy_core::value::PrimaryKey;
use gloo_timers::callback::Timeout;
use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, MessageEvent, WebSocket};

use crate::errors;
use crate::lock::HeldLock;
use crate::results::Query;
use crate::storage::Storage;
use crate::user::User;

/// The WebSocket subprotocol of the sync protocol: `eddy-sync/5` under the name browsers accept
/// (`/` is not allowed in a subprotocol offered through the browser's WebSocket API).
pub(crate) const PROTOCOL: &str = eddy_core::protocol::BROWSER_SUBPROTOCOL;
/// The session ident on the connection.
pub(crate) const SESSION: SessionIdent = 1;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// What a pending promise waits for.
#[derive(Debug)]
pub(crate) enum Until {
    /// The storage writes emitted up to the waiter's first check are durable (the number is
    /// set then: `pump` drains the session's events before checking, so a write that creates
    /// this waiter counts its own storage write).
    Durable(Option<u64>),
    /// Every local changeset up to this client version is acknowledged by the server.
    Uploaded(u64),
    /// A MARK round trip completed (`request` is set once the MARK is sent, on connection
    /// number `connects`; a reconnect sends it again).
    Downloaded { request: Option<u64>, connects: u64 },
    /// The subscription set of this version is complete (or superseded).
    Subscriptions(u64),
    /// Storage is flushed (and checkpointed) and the database can close.
    Flushed,
}

/// A promise waiting in the driver.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) until: Until,
    pub(crate) resolve: Function,
    pub(crate) reject: Function,
    pub(crate) value: JsValue,
}

/// A results listener: the query, the keys it had, and the callback.
pub(crate) struct ResultsListener {
    pub(crate) query: Query,
    pub(crate) keys: Vec<PrimaryKey>,
    pub(crate) callback: Function,
    pub(crate) results: JsValue,
}

/// An object listener.
pub(crate) struct ObjectListener {
    pub(crate) collection: String,
    pub(crate) key: PrimaryKey,
    pub(crate) callback: Function,
    pub(crate) object: JsValue,
}

/// The open socket and the closures it calls.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(JsValue)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(JsValue)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

/// Counters the download waiters look at.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) marks_completed: u64,
    pub(crate) connects: u64,
}

/// The mutable state of an open database.
pub(crate) struct State {
    pub(crate) conn: ClientConnection,
    url: String,
    socket: Option<Socket>,
    socket_generation: u64,
    timer: Option<(u64, Timeout)>,
    /// Refreshes the access token before it expires.
    refresh_timer: Option<Timeout>,
    pub(crate) storage: Option<Rc<Storage>>,
    persist_queue: Vec<StorageWrite>,
    pub(crate) persist_seq: u64,
    durable_seq: u64,
    flushing: bool,
    storage_error: Option<String>,
    /// Encoded frames, each with the persist sequence number that must be durable first.
    outbox: VecDeque<(u64, Vec<u8>)>,
    limits: MessageLimits,
    pub(crate) waiters: Vec<Waiter>,
    pub(crate) progress: Progress,
    pub(crate) results_listeners: Vec<ResultsListener>,
    pub(crate) object_listeners: Vec<ObjectListener>,
    pub(crate) connection_listeners: Vec<Function>,
    pub(crate) progress_listeners: Vec<(bool, Function)>,
    pub(crate) on_error: Option<Function>,
    /// `sync.clientReset.onAfter`.
    pub(crate) on_reset: Option<Function>,
    /// `sync.clientReset.onBefore`.
    pub(crate) on_reset_before: Option<Function>,
    /// `sync.clientReset` mode `"manual"`: its `onManual` and the database's `path`. A reset the
    /// server asks for then stops the session instead of running.
    pub(crate) manual_reset: Option<(Option<Function>, String)>,
    /// The server asked for a reset in manual mode: the session stays stopped.
    pub(crate) reset_required: bool,
    /// A reset callback to call once the state's borrow ends.
    reset_notice: Option<ResetNotice>,
    pending_changes: Changes,
    notify_scheduled: bool,
    last_connection_state: &'static str,
    pub(crate) user: User,
    pub(crate) user_paused: bool,
    pub(crate) closed: bool,
    refreshing: bool,
}

/// An open database: the state plus what lives outside the borrow.
pub(crate) struct Inner {
    pub(crate) state: RefCell<State>,
    /// The running `write()`'s writes, applied to the store and set aside between calls (see
    /// `Eddy::stage`); `Err` with the message once one of them failed and the transaction was
    /// undone. `None` outside `write()`.
    pub(crate) staged: RefCell<Option<Result<SuspendedWrite, String>>>,
    pub(crate) in_write: Cell<bool>,
    /// Set while `sync.clientReset.onBefore` runs: writes are refused.
    pub(crate) read_only: Cell<bool>,
    pub(crate) schema: Schema,
    /// Schema `default`s: collection, property, value.
    pub(crate) defaults: Vec<Default>,
    window_listeners: RefCell<Vec<WindowListener>>,
    pub(crate) lock: RefCell<Option<HeldLock>>,
}

/// A `window` event listener: the event name and the closure.
type WindowListener = (&'static str, Closure<dyn FnMut(JsValue)>);

/// A schema `default`: collection, property, value.
pub(crate) type Default = (String, String, JsValue);

/// What the app is told when the server asks for a client reset.
#[derive(Debug)]
enum ResetNotice {
    /// `onBefore(db)`: the reset starts; the store still holds the local state.
    Before(Function),
    /// `onManual(session, path)`: manual mode stopped the session.
    Manual(Option<Function>, String),
}

/// A callback to run once the state is no longer borrowed.
pub(crate) type Call = (Function, Vec<JsValue>);

fn call_all(calls: Vec<Call>) {
    for (f, args) in calls {
        let args: Array = args.into_iter().collect();
        if let Err(e) = f.apply(&JsValue::UNDEFINED, &args) {
            web_sys::console::error_2(&"eddy-sync: a listener threw".into(), &e);
        }
    }
}

impl State {
    /// A new state around `conn`.
    pub(crate) fn new(
        conn: ClientConnection,
        url: String,
        user: User,
        storage: Rc<Storage>,
    ) -> State {
        State {
            conn,
            url,
            socket: None,
            socket_generation: 0,
            timer: None,
            refresh_timer: None,
            storage: Some(storage),
            persist_queue: Vec::new(),
            persist_seq: 0,
            durable_seq: 0,
            flushing: false,
            storage_error: None,
            outbox: VecDeque::new(),
            limits: MessageLimits::default(),
            waiters: Vec::new(),
            progress: Progress::default(),
            results_listeners: Vec::new(),
            object_listeners: Vec::new(),
            connection_listeners: Vec::new(),
            progress_listeners: Vec::new(),
            on_error: None,
            on_reset: None,
            on_reset_before: None,
            manual_reset: None,
            reset_required: false,
            reset_notice: None,
            pending_changes: Changes::new(),
            notify_scheduled: false,
            last_connection_state: "disconnected",
            user,
            user_paused: false,
            closed: false,
            refreshing: false,
        }
    }

    /// The session's store.
    pub(crate) fn store(&self) -> Option<&Store> {
        self.conn.session(SESSION).map(|s| s.store())
    }

    /// Records changes for the listeners.
    pub(crate) fn changed(&mut self, changes: Changes) {
        self.pending_changes.merge(changes);
    }

    /// `"connected"`, `"connecting"` or `"disconnected"`.
    pub(crate) fn connection_state(&self) -> &'static str {
        match self.conn.state() {
            ConnectionState::Connected => "connected",
            ConnectionState::Connecting => "connecting",
            _ => "disconnected",
        }
    }
}

impl Inner {
    /// A new database around `state`.
    pub(crate) fn new(state: State, schema: Schema, defaults: Vec<Default>) -> Rc<Inner> {
        Rc::new(Inner {
            state: RefCell::new(state),
            staged: RefCell::new(None),
            in_write: Cell::new(false),
            read_only: Cell::new(false),
            schema,
            defaults,
            window_listeners: RefCell::new(Vec::new()),
            lock: RefCell::new(None),
        })
    }

    /// Starts reacting to `online`/`offline`: offline drops the connection and stops retrying,
    /// online retries at once (unless the application paused sync).
    pub(crate) fn listen_to_network(self: &Rc<Self>) {
        let Some(window) = web_sys::window() else {
            return;
        };
        for (name, online) in [("online", true), ("offline", false)] {
            let weak = Rc::downgrade(self);
            let closure = Closure::<dyn FnMut(JsValue)>::new(move |_| {
                if let Some(inner) = weak.upgrade() {
                    {
                        let mut st = inner.state.borrow_mut();
                        if st.closed || st.user_paused || st.reset_required {
                            return;
                        }
                        if online {
                            // Retry at once instead of waiting out the backoff.
                            st.conn.resume(now_ms());
                        } else {
                            // No attempts while the browser knows there is no network.
                            st.socket = None;
                            st.conn.pause();
                        }
                    }
                    pump(&inner);
                }
            });
            let _ = window.add_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
            self.window_listeners.borrow_mut().push((name, closure));
        }
    }

    /// Stops reacting to the network, closes the socket and releases the tab lock; returns the
    /// promise that resolves once the lock is free.
    pub(crate) fn shut_down(&self) -> Option<js_sys::Promise> {
        crate::object::store_changed();
        if let Some(window) = web_sys::window() {
            for (name, closure) in self.window_listeners.borrow_mut().drain(..) {
                let _ = window
                    .remove_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
            }
        }
        let mut st = self.state.borrow_mut();
        st.closed = true;
        st.timer = None;
        st.refresh_timer = None;
        st.socket = None;
        st.conn.pause();
        self.lock.borrow_mut().take().map(HeldLock::release)
    }
}

fn open_socket(inner: &Rc<Inner>, st: &mut State) -> Result<(), JsValue> {
    let ws = WebSocket::new_with_str(&st.url, PROTOCOL)?;
    ws.set_binary_type(BinaryType::Arraybuffer);
    st.socket_generation += 1;
    let generation = st.socket_generation;
    // Frames still waiting for durability were meant for the previous connection; the session
    // sends what it needs again after binding on this one.
    st.outbox.clear();
    let current = move |weak: &Weak<Inner>| -> Option<Rc<Inner>> {
        let inner = weak.upgrade()?;
        let same = inner.state.borrow().socket_generation == generation;
        same.then_some(inner)
    };
    let weak = Rc::downgrade(inner);
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Some(inner) = current(&weak) {
            {
                let mut st = inner.state.borrow_mut();
                st.progress.connects += 1;
                st.conn.handle_connected(now_ms());
            }
            pump(&inner);
        }
    });
    let weak = Rc::downgrade(inner);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        if let Some(inner) = current(&weak) {
            {
                let mut st = inner.state.borrow_mut();
                let bytes = js_sys::Uint8Array::new(&event.data()).to_vec();
                match decode_server_message(&bytes, &st.limits) {
                    Ok(msg) => st.conn.handle_message(now_ms(), msg),
                    Err(e) => {
                        web_sys::console::warn_1(
                            &format!("eddy-sync: undecodable frame from the server: {e}").into(),
                        );
                        st.socket = None;
                        st.conn.handle_disconnected(now_ms());
                    }
                }
            }
            pump(&inner);
        }
    });
    let weak = Rc::downgrade(inner);
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Some(inner) = current(&weak) {
            {
                let mut st = inner.state.borrow_mut();
                st.socket = None;
                st.conn.handle_disconnected(now_ms());
            }
            pump(&inner);
        }
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    ws.set_onerror(Some(on_close.as_ref().unchecked_ref()));
    st.socket = Some(Socket {
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    });
    Ok(())
}

/// Runs everything the connection and session want done; see the module docs.
pub(crate) fn pump(inner: &Rc<Inner>) {
    crate::object::store_changed();
    let mut calls = Vec::new();
    let mut refresh = false;
    let notice;
    {
        let mut st = inner.state.borrow_mut();
        if st.closed {
            return;
        }
        for _ in 0..8 {
            let mut busy = false;
            while let Some(action) = st.conn.poll_action() {
                busy = true;
                match action {
                    eddy_core::client::ConnectionAction::Connect => {
                        st.socket = None;
                        if let Err(e) = open_socket(inner, &mut st) {
                            web_sys::console::warn_2(
                                &"eddy-sync: cannot open the WebSocket".into(),
                                &e,
                            );
                            st.conn.handle_disconnected(now_ms());
                        }
                    }
                    _ => st.socket = None,
                }
            }
            busy |= drain_events(&mut st, &mut calls, &mut refresh);
            busy |= check_waiters(&mut st, &mut calls);
            while let Some(msg) = st.conn.poll_transmit() {
                busy = true;
                let seq = st.persist_seq;
                st.outbox.push_back((seq, encode_client_message(&msg)));
            }
            let reconnect = st
                .conn
                .session_mut(SESSION)
                .is_some_and(|s| s.take_reconnect_request());
            if reconnect {
                busy = true;
                st.socket = None;
                st.conn.handle_disconnected(now_ms());
            }
            if !busy {
                break;
            }
        }
        send_ready(&mut st);
        if !st.persist_queue.is_empty() && !st.flushing && st.storage_error.is_none() {
            st.flushing = true;
            // Spawned before the listeners' notification, so the IndexedDB transaction is under
            // way while they run.
            wasm_bindgen_futures::spawn_local(flush_storage(Rc::clone(inner)));
        }
        schedule_timer(inner, &mut st);
        let state = st.connection_state();
        if state != st.last_connection_state {
            let old = std::mem::replace(&mut st.last_connection_state, state);
            for listener in &st.connection_listeners {
                calls.push((listener.clone(), vec![state.into(), old.into()]));
            }
        }
        if !st.pending_changes.is_empty() && !st.notify_scheduled {
            st.notify_scheduled = true;
            let weak = Rc::downgrade(inner);
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(inner) = weak.upgrade() {
                    notify(&inner);
                }
            });
        }
        if refresh && !st.refreshing {
            st.refreshing = true;
        } else {
            refresh = false;
        }
        notice = st.reset_notice.take();
    }
    call_all(calls);
    if let Some(notice) = notice {
        tell_reset(inner, notice);
    }
    if refresh {
        wasm_bindgen_futures::spawn_local(refresh_token(Rc::clone(inner), false));
    }
}

/// Arms a timer that refreshes the access token shortly before it expires, so a live session
/// is renewed with REFRESH instead of being ended by the server (202) and bound again.
pub(crate) fn schedule_refresh(inner: &Rc<Inner>) {
    let mut st = inner.state.borrow_mut();
    let Some(at) = st.user.session.borrow().refresh_at_ms() else {
        st.refresh_timer = None;
        return;
    };
    let delay = at.saturating_sub(now_ms()).min(u64::from(u32::MAX / 2)) as u32;
    let weak = Rc::downgrade(inner);
    st.refresh_timer = Some(Timeout::new(delay, move || {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        {
            let mut st = inner.state.borrow_mut();
            st.refresh_timer = None;
            if st.closed || st.refreshing {
                return;
            }
            st.refreshing = true;
        }
        wasm_bindgen_futures::spawn_local(refresh_token(inner, true));
    }));
}

fn send_ready(st: &mut State) {
    let Some(socket) = st.socket.as_ref() else {
        return;
    };
    if socket.ws.ready_state() != WebSocket::OPEN {
        return;
    }
    while st
        .outbox
        .front()
        .is_some_and(|(seq, _)| *seq <= st.durable_seq)
    {
        if let Some((_, frame)) = st.outbox.pop_front() {
            if socket.ws.send_with_u8_array(&frame).is_err() {
                st.socket = None;
                st.conn.handle_disconnected(now_ms());
                return;
            }
        }
    }
}

fn schedule_timer(inner: &Rc<Inner>, st: &mut State) {
    let Some(at) = st.conn.poll_timeout() else {
        st.timer = None;
        return;
    };
    if st.timer.as_ref().is_some_and(|(when, _)| *when == at) {
        return;
    }
    let delay = at.saturating_sub(now_ms()).min(u64::from(u32::MAX / 2)) as u32;
    let weak = Rc::downgrade(inner);
    let timeout = Timeout::new(delay, move || {
        if let Some(inner) = weak.upgrade() {
            {
                let mut st = inner.state.borrow_mut();
                st.timer = None;
                st.conn.handle_timeout(now_ms());
            }
            pump(&inner);
        }
    });
    st.timer = Some((at, timeout));
}

fn drain_events(st: &mut State, calls: &mut Vec<Call>, refresh: &mut bool) -> bool {
    let mut events = Vec::new();
    if let Some(session) = st.conn.session_mut(SESSION) {
        while let Some(event) = session.poll_event() {
            events.push(event);
        }
    }
    let busy = !events.is_empty();
    for event in events {
        match event {
            SessionEvent::Persist(write) => {
                st.persist_queue.push(write);
                st.persist_seq += 1;
            }
            SessionEvent::Changes(changes) => st.changed(changes),
            SessionEvent::UploadAcknowledged { .. } => {
                for (upload, listener) in &st.progress_listeners {
                    if *upload {
                        calls.push((listener.clone(), vec![JsValue::from_f64(1.0)]));
                    }
                }
            }
            SessionEvent::DownloadComplete { request } => {
                st.progress.marks_completed = st.progress.marks_completed.max(request);
                for (upload, listener) in &st.progress_listeners {
                    if !*upload {
                        calls.push((listener.clone(), vec![JsValue::from_f64(1.0)]));
                    }
                }
            }
            SessionEvent::Error(error) => {
                if error.action == ErrorAction::RefreshToken {
                    *refresh = true;
                }
                if error.action == ErrorAction::ClientReset {
                    reset_requested(st);
                }
                report(st, calls, errors::sync(&error));
            }
            SessionEvent::ClientReset {
                recovered,
                discarded,
            } => {
                let summary = Object::new();
                for (name, count) in [("recovered", recovered), ("discarded", discarded)] {
                    let _ = Reflect::set(&summary, &name.into(), &JsValue::from(count));
                }
                match &st.on_reset {
                    Some(f) => calls.push((f.clone(), vec![summary.into()])),
                    None => web_sys::console::info_2(&"eddy-sync: client reset".into(), &summary),
                }
            }
            _ => {}
        }
    }
    busy
}

/// The server asked for a client reset (the session's `ClientReset`-action error, which it has
/// just answered by starting the reset). In manual mode the session stops here, before anything is
/// reset, and stays stopped; `onManual` is told. Otherwise `onBefore` is called: the core replaces
/// the local state only once the server's state has arrived, in a later message, so the store
/// still holds the local state while the callback runs.
fn reset_requested(st: &mut State) {
    if let Some((on_manual, path)) = &st.manual_reset {
        st.reset_notice = Some(ResetNotice::Manual(on_manual.clone(), path.clone()));
        st.reset_required = true;
        st.socket = None;
        st.conn.pause();
    } else if let Some(on_before) = &st.on_reset_before {
        st.reset_notice = Some(ResetNotice::Before(on_before.clone()));
    }
}

/// Calls `onBefore` (with the database, read-only while it runs) or `onManual` (with the sync
/// session and the database's path).
fn tell_reset(inner: &Rc<Inner>, notice: ResetNotice) {
    let called = match notice {
        ResetNotice::Before(on_before) => {
            let db = JsValue::from(crate::eddy::Eddy {
                inner: Rc::clone(inner),
            });
            inner.read_only.set(true);
            let called = on_before.call1(&JsValue::UNDEFINED, &db);
            inner.read_only.set(false);
            called
        }
        ResetNotice::Manual(Some(on_manual), path) => {
            let session = JsValue::from(crate::sync_session::SyncSession::new(Rc::clone(inner)));
            on_manual.call2(&JsValue::UNDEFINED, &session, &path.into())
        }
        ResetNotice::Manual(None, _) => {
            web_sys::console::warn_1(&"eddy-sync: the server asked for a client reset; sync.clientReset.mode \"manual\" stopped the session: close the database, delete it with Eddy.deleteDatabase and open it again".into());
            Ok(JsValue::UNDEFINED)
        }
    };
    if let Err(e) = called {
        web_sys::console::error_2(&"eddy-sync: a client reset callback threw".into(), &e);
    }
}

/// Hands an error to `sync.onError`, or logs it when there is none.
pub(crate) fn report(st: &State, calls: &mut Vec<Call>, error: JsValue) {
    match &st.on_error {
        Some(f) => calls.push((f.clone(), vec![JsValue::NULL, error])),
        None => web_sys::console::warn_2(&"eddy-sync:".into(), &error),
    }
}

fn check_waiters(st: &mut State, calls: &mut Vec<Call>) -> bool {
    let mut busy = false;
    let waiters = std::mem::take(&mut st.waiters);
    for mut waiter in waiters {
        let done: Option<Result<(), JsValue>> = match &mut waiter.until {
            Until::Durable(seq) => match &st.storage_error {
                Some(e) => Some(Err(errors::storage(e))),
                None => (st.durable_seq >= *seq.get_or_insert(st.persist_seq)).then_some(Ok(())),
            },
            Until::Flushed => ((st.durable_seq >= st.persist_seq && !st.flushing)
                || st.storage_error.is_some())
            .then_some(Ok(())),
            Until::Uploaded(version) => {
                let version = *version;
                let session = st.conn.session(SESSION);
                session
                    .is_some_and(|s| s.pending().first().is_none_or(|c| c.meta.version > version))
                    .then_some(Ok(()))
            }
            Until::Downloaded { request, connects } => {
                let connects_now = st.progress.connects;
                let completed = st.progress.marks_completed;
                let session = st.conn.session_mut(SESSION);
                match (session, *request) {
                    (Some(_), Some(r)) if completed >= r => Some(Ok(())),
                    (Some(_), Some(_)) if *connects != connects_now => {
                        *request = None;
                        None
                    }
                    (Some(s), None)
                        if s.is_active()
                            && !matches!(
                                s.subscription_state(),
                                SubscriptionState::Pending | SubscriptionState::Bootstrapping
                            ) =>
                    {
                        *request = Some(s.request_download_completion());
                        *connects = connects_now;
                        busy = true;
                        None
                    }
                    _ => None,
                }
            }
            Until::Subscriptions(version) => st.conn.session(SESSION).and_then(|s| {
                if s.meta().subscriptions.version > *version {
                    return Some(Ok(()));
                }
                match s.subscription_state() {
                    SubscriptionState::Complete => Some(Ok(())),
                    SubscriptionState::Error(message) => Some(Err(errors::eddy_error(
                        "subscription",
                        "applicationBug",
                        &format!("the server refused the subscriptions: {message}"),
                    ))),
                    _ => None,
                }
            }),
        };
        match done {
            Some(Ok(())) => calls.push((waiter.resolve, vec![waiter.value])),
            Some(Err(e)) => calls.push((waiter.reject, vec![e])),
            None => st.waiters.push(waiter),
        }
    }
    busy
}

/// A promise that resolves (to `value`) when `until` holds.
pub(crate) fn wait(inner: &Rc<Inner>, until: Until, value: JsValue) -> js_sys::Promise {
    let mut until = Some(until);
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        if let Some(until) = until.take() {
            inner.state.borrow_mut().waiters.push(Waiter {
                until,
                resolve,
                reject,
                value: value.clone(),
            });
        }
    });
    pump(inner);
    promise
}

async fn flush_storage(inner: Rc<Inner>) {
    loop {
        let (writes, seq, storage) = {
            let mut st = inner.state.borrow_mut();
            if st.persist_queue.is_empty() || st.storage.is_none() {
                st.flushing = false;
                break;
            }
            let writes = std::mem::take(&mut st.persist_queue);
            (writes, st.persist_seq, st.storage.clone())
        };
        let Some(storage) = storage else {
            break;
        };
        match storage.write(writes).await {
            Ok(()) => inner.state.borrow_mut().durable_seq = seq,
            Err(e) => {
                storage_failed(&inner, e);
                break;
            }
        }
        pump(&inner);
        // The object records the commit left out follow once the resolved writes had their turn.
        if storage.needs_checkpoint() {
            gloo_timers::future::TimeoutFuture::new(0).await;
            if let Err(e) = storage.checkpoint().await {
                storage_failed(&inner, e);
                break;
            }
        }
    }
    // A closed database still resolves `close()` once the last batch is written.
    let mut calls = Vec::new();
    check_waiters(&mut inner.state.borrow_mut(), &mut calls);
    call_all(calls);
}

/// Records a storage failure and rejects the waiting writes; nothing more is written or sent.
fn storage_failed(inner: &Inner, e: String) {
    let mut calls = Vec::new();
    {
        let mut st = inner.state.borrow_mut();
        report(&st, &mut calls, errors::storage(&e));
        st.storage_error = Some(e);
        st.flushing = false;
        check_waiters(&mut st, &mut calls);
    }
    call_all(calls);
}

/// Gets a new access token and hands it to the session (REFRESH when bound, else the next BIND).
/// A failed refresh ahead of expiry is only logged: the server's 202 at expiry tries again and
/// reports what fails then.
async fn refresh_token(inner: Rc<Inner>, ahead_of_expiry: bool) {
    let user = inner.state.borrow().user.clone();
    let result = user.refresh().await;
    let mut calls = Vec::new();
    let refreshed = {
        let mut st = inner.state.borrow_mut();
        st.refreshing = false;
        match result {
            Ok(token) => {
                if let Some(session) = st.conn.session_mut(SESSION) {
                    session.refresh(token);
                }
                true
            }
            Err(e) if ahead_of_expiry => {
                web_sys::console::warn_2(
                    &"eddy-sync: cannot refresh the access token ahead of its expiry".into(),
                    &e,
                );
                false
            }
            Err(e) => {
                report(&st, &mut calls, e);
                false
            }
        }
    };
    call_all(calls);
    if refreshed {
        schedule_refresh(&inner);
    }
    pump(&inner);
}

/// Calls the results and object listeners for the changes since the last call.
fn notify(inner: &Rc<Inner>) {
    let mut calls = Vec::new();
    {
        let mut st = inner.state.borrow_mut();
        st.notify_scheduled = false;
        let changes = std::mem::take(&mut st.pending_changes);
        let st = &mut *st;
        let Some(store) = st.conn.session(SESSION).map(|s| s.store()) else {
            return;
        };
        for listener in &mut st.results_listeners {
            let Some(coll) = changes.collection(&listener.query.collection) else {
                continue;
            };
            let keys = match listener.query.keys(store) {
                Ok(keys) => keys,
                Err(_) => continue,
            };
            // Owned keys inserted one by one: the core already has this set type (a set of
            // references, or `collect`, would add its own B-tree or sort code to the wasm).
            let mut old = BTreeSet::new();
            for key in &listener.keys {
                old.insert(key.clone());
            }
            let mut new = BTreeSet::new();
            for key in &keys {
                new.insert(key.clone());
            }
            let deletions: Vec<usize> = listener
                .keys
                .iter()
                .enumerate()
                .filter(|(_, k)| !new.contains(k))
                .map(|(i, _)| i)
                .collect();
            let insertions: Vec<usize> = keys
                .iter()
                .enumerate()
                .filter(|(_, k)| !old.contains(k))
                .map(|(i, _)| i)
                .collect();
            let modifications: Vec<usize> = keys
                .iter()
                .enumerate()
                .filter(|(_, k)| old.contains(k) && coll.modifications().contains_key(*k))
                .map(|(i, _)| i)
                .collect();
            if deletions.is_empty()
                && insertions.is_empty()
                && modifications.is_empty()
                && keys == listener.keys
            {
                continue;
            }
            let indices = |v: &[usize]| -> JsValue {
                v.iter()
                    .map(|i| JsValue::from(*i as u32))
                    .collect::<Array>()
                    .into()
            };
            let change = Object::new();
            let _ = Reflect::set(&change, &"insertions".into(), &indices(&insertions));
            let _ = Reflect::set(&change, &"deletions".into(), &indices(&deletions));
            let _ = Reflect::set(&change, &"modifications".into(), &indices(&modifications));
            let _ = Reflect::set(
                &change,
                &"newModifications".into(),
                &indices(&modifications),
            );
            listener.keys = keys;
            calls.push((
                listener.callback.clone(),
                vec![listener.results.clone(), change.into()],
            ));
        }
        for listener in &st.object_listeners {
            let Some(coll) = changes.collection(&listener.collection) else {
                continue;
            };
            let deleted = coll.deletions().contains(&listener.key);
            let fields: Option<&BTreeSet<String>> = coll.modifications().get(&listener.key);
            if !deleted && fields.is_none() {
                continue;
            }
            let change = Object::new();
            let _ = Reflect::set(&change, &"deleted".into(), &JsValue::from_bool(deleted));
            let names: Array = fields
                .into_iter()
                .flatten()
                .map(|f| JsValue::from_str(f))
                .collect();
            let _ = Reflect::set(&change, &"changedProperties".into(), &names);
            calls.push((
                listener.callback.clone(),
                vec![listener.object.clone(), change.into()],
            ));
        }
    }
    call_all(calls);
}
