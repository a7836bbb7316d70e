//! `Credentials`: how `App.logIn` signs a user in.

use wasm_bindgen::prelude::*;

/// How to sign in: `Credentials.anonymous()` or `Credentials.emailPassword(email, password)`.
#[wasm_bindgen]
#[derive(Clone, Debug)]
pub struct Credentials {
    pub(crate) kind: CredentialsKind,
}

#[derive(Clone, Debug)]
pub(crate) enum CredentialsKind {
    Anonymous,
    EmailPassword { email: String, password: String },
}

#[wasm_bindgen]
impl Credentials {
    /// A new anonymous user on every sign-in.
    pub fn anonymous() -> Credentials {
        Credentials {
            kind: CredentialsKind::Anonymous,
        }
    }

    /// A registered user (see `app.emailPasswordAuth.registerUser`).
    #[wasm_bindgen(js_name = emailPassword)]
    pub fn email_password(email: String, password: String) -> Credentials {
        Credentials {
            kind: CredentialsKind::EmailPassword { email, password },
        }
    }

    /// `"anonymous"` or `"email-password"`.
    #[wasm_bindgen(getter, js_name = providerType)]
    pub fn provider_type(&self) -> String {
        match self.kind {
            CredentialsKind::Anonymous => "anonymous".into(),
            CredentialsKind::EmailPassword { .. } => "email-password".into(),
        }
    }
}
