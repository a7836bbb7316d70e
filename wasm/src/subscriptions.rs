//! `SubscriptionSet` (`db.subscriptions`) and `MutableSubscriptionSet` (the argument of
//! `update`): which queries this client syncs.
//!
//! The server does not narrow downloads to the subscriptions yet (every object of the file is
//! synced); subscriptions are still validated, stored, sent and tracked through their states.

use std::cell::RefCell;
use std::rc::Rc;

use eddy_core::client::SubscriptionState;
use eddy_core::protocol::{Subscription, SubscriptionSet as CoreSet};
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;

use crate::driver::{pump, wait, Inner, Until, SESSION};
use crate::errors;
use crate::results::Results;

/// The current subscriptions, their state, and `update`.
#[wasm_bindgen]
pub struct SubscriptionSet {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for SubscriptionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionSet").finish_non_exhaustive()
    }
}

impl SubscriptionSet {
    pub(crate) fn new(inner: Rc<Inner>) -> SubscriptionSet {
        SubscriptionSet { inner }
    }
}

fn subscription_object(s: &Subscription) -> JsValue {
    let o = Object::new();
    let _ = Reflect::set(&o, &"name".into(), &s.name.as_str().into());
    let _ = Reflect::set(&o, &"objectType".into(), &s.collection.as_str().into());
    let _ = Reflect::set(&o, &"queryString".into(), &s.query.as_str().into());
    o.into()
}

#[wasm_bindgen]
impl SubscriptionSet {
    /// `"pending"`, `"bootstrapping"`, `"complete"`, `"error"` or `"superseded"`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        let st = self.inner.state.borrow();
        match st.conn.session(SESSION).map(|s| s.subscription_state()) {
            Some(SubscriptionState::Pending) => "pending",
            Some(SubscriptionState::Bootstrapping) => "bootstrapping",
            Some(SubscriptionState::Complete) => "complete",
            Some(SubscriptionState::Error(_)) => "error",
            Some(SubscriptionState::Superseded) => "superseded",
            _ => "pending",
        }
        .into()
    }

    /// The server's reason when `state` is `"error"`.
    #[wasm_bindgen(getter)]
    pub fn error(&self) -> Option<String> {
        let st = self.inner.state.borrow();
        match st.conn.session(SESSION).map(|s| s.subscription_state()) {
            Some(SubscriptionState::Error(message)) => Some(message.clone()),
            _ => None,
        }
    }

    /// The set's version (each `update` makes a higher one).
    #[wasm_bindgen(getter)]
    pub fn version(&self) -> f64 {
        let st = self.inner.state.borrow();
        st.conn
            .session(SESSION)
            .map_or(0.0, |s| s.meta().subscriptions.version as f64)
    }

    /// How many subscriptions there are.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> u32 {
        let st = self.inner.state.borrow();
        st.conn
            .session(SESSION)
            .map_or(0, |s| s.meta().subscriptions.subscriptions.len() as u32)
    }

    /// The subscriptions as `{ name, objectType, queryString }`.
    #[wasm_bindgen(js_name = toArray)]
    pub fn to_array(&self) -> Array {
        let st = self.inner.state.borrow();
        st.conn
            .session(SESSION)
            .map(|s| {
                s.meta()
                    .subscriptions
                    .subscriptions
                    .iter()
                    .map(subscription_object)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The subscription named `name`, or `null`.
    #[wasm_bindgen(js_name = findByName)]
    pub fn find_by_name(&self, name: &str) -> JsValue {
        let st = self.inner.state.borrow();
        st.conn
            .session(SESSION)
            .and_then(|s| {
                s.meta()
                    .subscriptions
                    .subscriptions
                    .iter()
                    .find(|x| x.name == name)
                    .map(subscription_object)
            })
            .unwrap_or(JsValue::NULL)
    }

    /// Changes the subscriptions: `update((mutableSubs, db) => mutableSubs.add(query, { name }))`.
    /// Resolves when the server has sent everything the new set selects.
    pub fn update(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(subs: MutableSubscriptionSet) => void")]
        callback: &Function,
    ) -> Result<Promise, JsValue> {
        let set = MutableSubscriptionSet::new(Rc::clone(&self.inner));
        callback.call1(&JsValue::UNDEFINED, &JsValue::from(set.clone()))?;
        let version = set.commit()?;
        Ok(wait(
            &self.inner,
            Until::Subscriptions(version),
            JsValue::UNDEFINED,
        ))
    }

    /// Resolves when the current set is complete; rejects when the server refused it.
    #[wasm_bindgen(js_name = waitForSynchronization)]
    pub fn wait_for_synchronization(&self) -> Promise {
        let version = self.version() as u64;
        wait(
            &self.inner,
            Until::Subscriptions(version),
            JsValue::UNDEFINED,
        )
    }
}

/// The subscriptions being edited inside `update`.
#[wasm_bindgen]
#[derive(Clone)]
pub struct MutableSubscriptionSet {
    inner: Rc<Inner>,
    subscriptions: Rc<RefCell<Vec<Subscription>>>,
}

impl std::fmt::Debug for MutableSubscriptionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutableSubscriptionSet")
            .finish_non_exhaustive()
    }
}

impl MutableSubscriptionSet {
    /// An editable copy of the current set.
    pub(crate) fn new(inner: Rc<Inner>) -> MutableSubscriptionSet {
        let current = {
            let st = inner.state.borrow();
            st.conn
                .session(SESSION)
                .map(|s| s.meta().subscriptions.subscriptions.clone())
                .unwrap_or_default()
        };
        MutableSubscriptionSet {
            inner,
            subscriptions: Rc::new(RefCell::new(current)),
        }
    }

    /// Hands the edited set to the session; returns its version.
    pub(crate) fn commit(&self) -> Result<u64, JsValue> {
        let version = {
            let mut st = self.inner.state.borrow_mut();
            let session = st
                .conn
                .session_mut(SESSION)
                .ok_or_else(|| errors::usage("the database is closed"))?;
            session.update_subscriptions(CoreSet {
                version: 0,
                subscriptions: self.subscriptions.borrow().clone(),
            })
        };
        pump(&self.inner);
        Ok(version)
    }
}

#[wasm_bindgen]
impl MutableSubscriptionSet {
    /// Subscribes to a query (`db.objects("Task").filtered("owner == $0", me)`); `options.name`
    /// names it (default: the query text). Adding a name again replaces that subscription.
    pub fn add(
        &self,
        results: &Results,
        #[wasm_bindgen(unchecked_param_type = "{ name?: string }")] options: JsValue,
    ) -> Result<(), JsValue> {
        let query = results
            .query
            .subscription_text()
            .map_err(|e| errors::usage(format!("cannot subscribe: {e}")))?;
        let collection = results.query.collection.clone();
        let name = Reflect::get(&options, &"name".into())
            .ok()
            .and_then(|n| n.as_string())
            .unwrap_or_else(|| format!("{collection}: {query}"));
        let mut subs = self.subscriptions.borrow_mut();
        subs.retain(|s| s.name != name);
        subs.push(Subscription {
            name,
            collection,
            query,
        });
        Ok(())
    }

    /// Removes the subscription named `name`; returns whether there was one.
    #[wasm_bindgen(js_name = removeByName)]
    pub fn remove_by_name(&self, name: &str) -> bool {
        let mut subs = self.subscriptions.borrow_mut();
        let before = subs.len();
        subs.retain(|s| s.name != name);
        subs.len() != before
    }

    /// Removes every subscription to the collection `name`; returns how many.
    #[wasm_bindgen(js_name = removeByObjectType)]
    pub fn remove_by_object_type(&self, name: &str) -> u32 {
        let mut subs = self.subscriptions.borrow_mut();
        let before = subs.len();
        subs.retain(|s| s.collection != name);
        (before - subs.len()) as u32
    }

    /// Removes every subscription; returns how many.
    #[wasm_bindgen(js_name = removeAll)]
    pub fn remove_all(&self) -> u32 {
        let mut subs = self.subscriptions.borrow_mut();
        let n = subs.len() as u32;
        subs.clear();
        n
    }
}
