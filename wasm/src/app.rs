//! `App` and `EmailPasswordAuth`: sign-in against an Eddy server.

use std::cell::RefCell;

use eddy_core::quote::Quoted;
use wasm_bindgen::prelude::*;

use crate::credentials::{Credentials, CredentialsKind};
use crate::errors;
use crate::http::{post_json, reply_text};
use crate::user::{Session, User};

#[wasm_bindgen(typescript_custom_section)]
const APP_CONFIG: &'static str = r#"
/** How to reach an Eddy server. */
export interface AppConfiguration {
  /** The app id (names the local databases). */
  id: string;
  /** The server's HTTP URL, e.g. "http://localhost:8080". */
  baseUrl: string;
}
"#;

/// An Eddy app: the server to sign in to and sync with.
#[wasm_bindgen]
#[derive(Debug)]
pub struct App {
    id: String,
    base_url: String,
    current: RefCell<Option<User>>,
}

#[wasm_bindgen]
impl App {
    /// `new App({ id, baseUrl })`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "AppConfiguration")] config: JsValue,
    ) -> Result<App, JsValue> {
        let get = |name: &str| {
            js_sys::Reflect::get(&config, &name.into())
                .ok()
                .and_then(|v| v.as_string())
        };
        let id = get("id")
            .ok_or_else(|| errors::usage("new App({ id, baseUrl }): id must be a string"))?;
        let base_url = get("baseUrl").ok_or_else(|| {
            errors::usage("new App({ id, baseUrl }): baseUrl must be the server's http(s) URL")
        })?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(errors::usage(format!(
                "baseUrl {base_url} must start with http:// or https://",
                base_url = Quoted(&base_url)
            )));
        }
        Ok(App {
            id,
            base_url: base_url.trim_end_matches('/').to_owned(),
            current: RefCell::new(None),
        })
    }

    /// The app id.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// The server URL.
    #[wasm_bindgen(getter, js_name = baseUrl)]
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The user signed in last, if any.
    #[wasm_bindgen(getter, js_name = currentUser)]
    pub fn current_user(&self) -> Option<User> {
        self.current.borrow().clone()
    }

    /// Email/password registration.
    #[wasm_bindgen(getter, js_name = emailPasswordAuth)]
    pub fn email_password_auth(&self) -> EmailPasswordAuth {
        EmailPasswordAuth {
            base_url: self.base_url.clone(),
        }
    }

    /// Signs in; resolves to the `User`.
    #[wasm_bindgen(js_name = logIn)]
    pub async fn log_in(&self, credentials: &Credentials) -> Result<User, JsValue> {
        let reply = match &credentials.kind {
            CredentialsKind::Anonymous => {
                post_json(&format!("{}/api/auth/anonymous", self.base_url), &[]).await?
            }
            CredentialsKind::EmailPassword { email, password } => {
                post_json(
                    &format!("{}/api/auth/login", self.base_url),
                    &[("email", email), ("password", password)],
                )
                .await?
            }
        };
        let text = |name: &str| reply_text(&reply, name).unwrap_or_default();
        let mut session = Session {
            base_url: self.base_url.clone(),
            app_id: self.id.clone(),
            id: text("user_id"),
            access_token: text("access_token"),
            refresh_token: text("refresh_token"),
            expires_at_ms: 0,
            lifetime_ms: 0,
            logged_in: true,
        };
        session.set_expiry(&reply);
        let user = User::new(session);
        *self.current.borrow_mut() = Some(user.clone());
        Ok(user)
    }
}

/// `app.emailPasswordAuth`.
#[wasm_bindgen]
#[derive(Debug)]
pub struct EmailPasswordAuth {
    base_url: String,
}

#[wasm_bindgen]
impl EmailPasswordAuth {
    /// Registers a user: `registerUser({ email, password })`.
    #[wasm_bindgen(js_name = registerUser)]
    pub async fn register_user(
        &self,
        #[wasm_bindgen(unchecked_param_type = "{ email: string; password: string }")]
        details: JsValue,
    ) -> Result<(), JsValue> {
        let get = |name: &str| {
            js_sys::Reflect::get(&details, &name.into())
                .ok()
                .and_then(|v| v.as_string())
                .ok_or_else(|| {
                    errors::usage(format!(
                        "registerUser({{ email, password }}): {name} must be a string"
                    ))
                })
        };
        let (email, password) = (get("email")?, get("password")?);
        post_json(
            &format!("{}/api/auth/register", self.base_url),
            &[("email", &email), ("password", &password)],
        )
        .await?;
        Ok(())
    }
}
