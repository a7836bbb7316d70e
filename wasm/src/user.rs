//! `User`: a signed-in user with its tokens.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::http::{member, post_json, reply_text};

/// The tokens of a signed-in user, shared with the databases it opened (they take fresh access
/// tokens from here after a refresh).
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) base_url: String,
    pub(crate) app_id: String,
    pub(crate) id: String,
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    /// When the access token expires (ms since the epoch; 0 when the server did not say).
    pub(crate) expires_at_ms: u64,
    /// How long the access token was issued for, in ms.
    pub(crate) lifetime_ms: u64,
    pub(crate) logged_in: bool,
}

impl Session {
    /// Takes the lifetime a sign-in or refresh reply gives (`expires_in`, seconds).
    pub(crate) fn set_expiry(&mut self, reply: &JsValue) {
        let lifetime_ms = member(reply, "expires_in")
            .and_then(|n| n.as_f64())
            .filter(|n| *n >= 0.0 && n.fract() == 0.0)
            .map_or(0, |n| n as u64)
            .saturating_mul(1000);
        self.lifetime_ms = lifetime_ms;
        self.expires_at_ms = if lifetime_ms == 0 {
            0
        } else {
            crate::driver::now_ms().saturating_add(lifetime_ms)
        };
    }

    /// When to refresh the access token ahead of its expiry: a fifth of its lifetime (at most
    /// five minutes) before it; `None` when its expiry is unknown.
    pub(crate) fn refresh_at_ms(&self) -> Option<u64> {
        (self.expires_at_ms > 0).then(|| {
            self.expires_at_ms
                .saturating_sub((self.lifetime_ms / 5).min(300_000))
        })
    }
}

thread_local! {
    /// Every signed-in user by handle, so `Eddy.open({ sync: { user } })` can find the Rust side
    /// of the `User` it is given without taking it over.
    static USERS: RefCell<Vec<Rc<RefCell<Session>>>> = const { RefCell::new(Vec::new()) };
}

/// The user behind a JavaScript `User` object.
pub(crate) fn user_from_js(js: &JsValue) -> Option<User> {
    let handle = js_sys::Reflect::get(js, &"_handle".into()).ok()?.as_f64()? as usize;
    USERS
        .with(|u| u.borrow().get(handle).cloned())
        .map(|session| User { session, handle })
}

/// A signed-in user, from `app.logIn(credentials)`. Tokens live in memory only.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct User {
    pub(crate) session: Rc<RefCell<Session>>,
    handle: usize,
}

impl User {
    /// A user for a fresh sign-in.
    pub(crate) fn new(session: Session) -> User {
        let session = Rc::new(RefCell::new(session));
        let handle = USERS.with(|u| {
            let mut users = u.borrow_mut();
            users.push(Rc::clone(&session));
            users.len() - 1
        });
        User { session, handle }
    }

    /// Asks the server for a new access token with the refresh token.
    pub(crate) async fn refresh(&self) -> Result<String, JsValue> {
        let (url, refresh_token) = {
            let s = self.session.borrow();
            (
                format!("{}/api/auth/refresh", s.base_url),
                s.refresh_token.clone(),
            )
        };
        let reply = post_json(&url, &[("refresh_token", &refresh_token)]).await?;
        let token = reply_text(&reply, "access_token").unwrap_or_default();
        let mut session = self.session.borrow_mut();
        session.access_token = token.clone();
        session.set_expiry(&reply);
        Ok(token)
    }
}

#[wasm_bindgen]
impl User {
    /// The handle `Eddy.open` finds this user by.
    #[wasm_bindgen(getter, js_name = _handle, skip_typescript)]
    pub fn handle(&self) -> u32 {
        self.handle as u32
    }

    /// The user's id.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.session.borrow().id.clone()
    }

    /// The current access token (a JWT sent in BIND).
    #[wasm_bindgen(getter, js_name = accessToken)]
    pub fn access_token(&self) -> String {
        self.session.borrow().access_token.clone()
    }

    /// The refresh token.
    #[wasm_bindgen(getter, js_name = refreshToken)]
    pub fn refresh_token(&self) -> String {
        self.session.borrow().refresh_token.clone()
    }

    /// `"LoggedIn"` or `"LoggedOut"`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        if self.session.borrow().logged_in {
            "LoggedIn".into()
        } else {
            "LoggedOut".into()
        }
    }

    /// Revokes the refresh token on the server.
    #[wasm_bindgen(js_name = logOut)]
    pub async fn log_out(&self) -> Result<(), JsValue> {
        let (url, refresh_token) = {
            let s = self.session.borrow();
            (
                format!("{}/api/auth/logout", s.base_url),
                s.refresh_token.clone(),
            )
        };
        post_json(&url, &[("refresh_token", &refresh_token)]).await?;
        self.session.borrow_mut().logged_in = false;
        Ok(())
    }
}
