//! Authentication: anonymous and email/password users (argon2 hashes in SQLite), HS256 JWT access
//! tokens with a secret generated on first start, revocable refresh tokens, the HTTP endpoints
//! under `/api/auth`, and [`JwtAuth`], the engine's `Authenticator`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use eddy_core::server::{AuthError, AuthenticatedUser, Authenticator};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::ServerError;
use crate::{now_ms, AppState};

/// The file in the data directory that holds the JWT signing secret (hex).
pub const SECRET_FILE: &str = "jwt-secret";
/// The default lifetime of an access token: 30 minutes.
pub const DEFAULT_ACCESS_TTL_MS: u64 = 30 * 60 * 1000;
/// The longest accepted email address.
const MAX_EMAIL_BYTES: usize = 254;
/// The shortest accepted password.
const MIN_PASSWORD_BYTES: usize = 8;
/// The longest accepted password (hashing cost grows with it).
const MAX_PASSWORD_BYTES: usize = 1024;
/// The longest refresh token looked up.
const MAX_REFRESH_TOKEN_BYTES: usize = 256;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the JWT secret from `data_dir`, generating and storing a new one on first start.
pub fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>, ServerError> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            if text.len() < 32 {
                return Err(ServerError::Internal(format!(
                    "the JWT secret in \"{}\" is shorter than 32 characters; delete it to make a new one",
                    path.display()
                )));
            }
            Ok(text.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = hex(&rand::random::<[u8; 32]>());
            std::fs::write(&path, &secret).map_err(|e| {
                ServerError::Internal(format!("cannot write \"{}\": {e}", path.display()))
            })?;
            Ok(secret.into_bytes())
        }
        Err(e) => Err(ServerError::Internal(format!(
            "cannot read \"{}\": {e}",
            path.display()
        ))),
    }
}

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, in seconds since the Unix epoch.
    pub iat: u64,
}

/// Issues and verifies HS256 access tokens; the sync engine's [`Authenticator`].
#[derive(Clone)]
pub struct JwtAuth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    access_ttl_ms: u64,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("access_ttl_ms", &self.access_ttl_ms)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// A verifier signing with `secret`, issuing tokens valid for `access_ttl_ms`.
    pub fn new(secret: &[u8], access_ttl_ms: u64) -> Self {
        JwtAuth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            access_ttl_ms,
        }
    }

    /// How many whole seconds a token issued at `now_ms` stays valid (its `exp` is in whole
    /// seconds, so this can be up to a second less than the configured lifetime).
    pub fn expires_in_secs(&self, now_ms: u64) -> u64 {
        let exp_ms = now_ms.saturating_add(self.access_ttl_ms) / 1000 * 1000;
        exp_ms.saturating_sub(now_ms) / 1000
    }

    /// An access token for `user_id`, issued at `now_ms`.
    pub fn issue(&self, user_id: &str, now_ms: u64) -> Result<String, ServerError> {
        let claims = Claims {
            sub: user_id.to_string(),
            exp: now_ms.saturating_add(self.access_ttl_ms) / 1000,
            iat: now_ms / 1000,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ServerError::Internal(format!("cannot sign a token: {e}")))
    }
}

impl Authenticator for JwtAuth {
    fn authenticate(&self, token: &str, now_ms: u64) -> Result<AuthenticatedUser, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the engine's clock, not the library's.
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| AuthError::Invalid(format!("the access token is not valid: {e}")))?;
        let expires_at_ms = data.claims.exp.saturating_mul(1000);
        if expires_at_ms <= now_ms {
            return Err(AuthError::Expired);
        }
        Ok(AuthenticatedUser {
            id: data.claims.sub,
            expires_at_ms,
        })
    }
}

/// What every successful sign-in returns.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tokens {
    /// The user's id.
    pub user_id: String,
    /// A short-lived JWT for BIND and REFRESH.
    pub access_token: String,
    /// A long-lived token for `/api/auth/refresh`, revoked by `/api/auth/logout`.
    pub refresh_token: String,
    /// Seconds until the access token expires, so clients can refresh it before then.
    #[serde(default)]
    pub expires_in: u64,
}

/// Email and password, for register and login.
#[derive(Clone, Debug, Deserialize)]
pub struct Credentials {
    /// The email address.
    pub email: String,
    /// The password.
    pub password: String,
}

/// A refresh token, for refresh and logout.
#[derive(Clone, Debug, Deserialize)]
pub struct RefreshRequest {
    /// The refresh token.
    pub refresh_token: String,
}

/// Users, passwords and refresh tokens, on its own connection to the server's database.
#[derive(Clone)]
pub struct AuthService {
    db: Arc<Mutex<Connection>>,
    jwt: JwtAuth,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("jwt", &self.jwt)
            .finish_non_exhaustive()
    }
}

impl AuthService {
    /// The service over `db` signing with `jwt`.
    pub fn new(db: Connection, jwt: JwtAuth) -> Self {
        AuthService {
            db: Arc::new(Mutex::new(db)),
            jwt,
        }
    }

    /// The token verifier.
    pub fn jwt(&self) -> &JwtAuth {
        &self.jwt
    }

    /// Runs `f` on the database on a blocking thread.
    pub(crate) async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ServerError> + Send + 'static,
    ) -> Result<T, ServerError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let conn = db
                .lock()
                .map_err(|_| ServerError::Internal("the auth database lock is poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| ServerError::Internal(format!("an auth task failed: {e}")))?
    }

    /// Stores a new refresh token for `user_id` and issues both tokens.
    fn sign_in(&self, conn: &Connection, user_id: String) -> Result<Tokens, ServerError> {
        let refresh_token = hex(&rand::random::<[u8; 32]>());
        conn.execute(
            "INSERT INTO refresh_tokens (token, user_id) VALUES (?1, ?2)",
            params![refresh_token, user_id],
        )?;
        let now = now_ms();
        Ok(Tokens {
            access_token: self.jwt.issue(&user_id, now)?,
            user_id,
            refresh_token,
            expires_in: self.jwt.expires_in_secs(now),
        })
    }

    /// Creates an anonymous user.
    pub async fn anonymous(&self) -> Result<Tokens, ServerError> {
        let this = self.clone();
        self.with_db(move |conn| {
            let user_id = format!("anon-{}", hex(&rand::random::<[u8; 12]>()));
            conn.execute("INSERT INTO users (id) VALUES (?1)", params![user_id])?;
            this.sign_in(conn, user_id)
        })
        .await
    }

    /// Registers an email/password user.
    pub async fn register(&self, credentials: Credentials) -> Result<Tokens, ServerError> {
        let email = check_email(&credentials.email)?;
        check_password(&credentials.password)?;
        let password = credentials.password;
        let hash = tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
                .map_err(|e| ServerError::Internal(format!("cannot make a salt: {e}")))?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| ServerError::Internal(format!("cannot hash a password: {e}")))
        })
        .await
        .map_err(|e| ServerError::Internal(format!("a hashing task failed: {e}")))??;
        let this = self.clone();
        self.with_db(move |conn| {
            let user_id = format!("user-{}", hex(&rand::random::<[u8; 12]>()));
            let inserted = conn.execute(
                "INSERT INTO users (id, email, password_hash) VALUES (?1, ?2, ?3)
                 ON CONFLICT (email) DO NOTHING",
                params![user_id, email, hash],
            )?;
            if inserted == 0 {
                return Err(ServerError::Conflict(format!(
                    "email \"{email}\" is already registered; log in instead"
                )));
            }
            this.sign_in(conn, user_id)
        })
        .await
    }

    /// Logs an email/password user in.
    pub async fn login(&self, credentials: Credentials) -> Result<Tokens, ServerError> {
        let email = check_email(&credentials.email)?;
        let refused = || ServerError::Unauthorized("wrong email or password".into());
        if credentials.password.len() > MAX_PASSWORD_BYTES {
            return Err(refused());
        }
        let found: Option<(String, String)> = self
            .with_db(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT id, password_hash FROM users WHERE email = ?1",
                        params![email],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?)
            })
            .await?;
        let Some((user_id, stored)) = found else {
            return Err(refused());
        };
        let password = credentials.password;
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&stored).is_ok_and(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
        })
        .await
        .map_err(|e| ServerError::Internal(format!("a hashing task failed: {e}")))?;
        if !matches {
            return Err(refused());
        }
        let this = self.clone();
        self.with_db(move |conn| this.sign_in(conn, user_id)).await
    }

    /// A new access token for a live refresh token.
    pub async fn refresh(&self, token: String) -> Result<Tokens, ServerError> {
        if token.len() > MAX_REFRESH_TOKEN_BYTES {
            return Err(ServerError::Unauthorized(
                "the refresh token is not valid; log in again".into(),
            ));
        }
        let jwt = self.jwt.clone();
        self.with_db(move |conn| {
            let user_id: Option<String> = conn
                .query_row(
                    "SELECT user_id FROM refresh_tokens WHERE token = ?1 AND revoked = 0",
                    params![token],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(user_id) = user_id else {
                return Err(ServerError::Unauthorized(
                    "the refresh token is not valid or was revoked; log in again".into(),
                ));
            };
            let now = now_ms();
            Ok(Tokens {
                access_token: jwt.issue(&user_id, now)?,
                user_id,
                refresh_token: token,
                expires_in: jwt.expires_in_secs(now),
            })
        })
        .await
    }

    /// Revokes a refresh token (unknown tokens are refused so clients notice typos).
    pub async fn logout(&self, token: String) -> Result<(), ServerError> {
        self.with_db(move |conn| {
            let changed = conn.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE token = ?1 AND revoked = 0",
                params![token],
            )?;
            if changed == 0 {
                return Err(ServerError::Unauthorized(
                    "the refresh token is not valid or was already revoked".into(),
                ));
            }
            Ok(())
        })
        .await
    }
}

fn check_email(email: &str) -> Result<String, ServerError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_BYTES
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if valid {
        Ok(email)
    } else {
        Err(ServerError::BadRequest(format!(
            "\"{}\" is not an email address (at most {MAX_EMAIL_BYTES} bytes, with an @)",
            email.chars().take(64).collect::<String>()
        )))
    }
}

fn check_password(password: &str) -> Result<(), ServerError> {
    if (MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
        Ok(())
    } else {
        Err(ServerError::BadRequest(format!(
            "the password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes long, not {}",
            password.len()
        )))
    }
}

/// Turns axum's JSON rejections into the server's JSON errors.
fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ServerError> {
    body.map(|Json(v)| v).map_err(|e| {
        ServerError::BadRequest(format!("the request body is not valid: {}", e.body_text()))
    })
}

async fn anonymous(State(state): State<AppState>) -> Result<Json<Tokens>, ServerError> {
    state.auth().anonymous().await.map(Json)
}

async fn register(
    State(state): State<AppState>,
    payload: Result<Json<Credentials>, JsonRejection>,
) -> Result<(StatusCode, Json<Tokens>), ServerError> {
    let tokens = state.auth().register(body(payload)?).await?;
    Ok((StatusCode::CREATED, Json(tokens)))
}

async fn login(
    State(state): State<AppState>,
    payload: Result<Json<Credentials>, JsonRejection>,
) -> Result<Json<Tokens>, ServerError> {
    state.auth().login(body(payload)?).await.map(Json)
}

async fn refresh(
    State(state): State<AppState>,
    payload: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Json<Tokens>, ServerError> {
    state
        .auth()
        .refresh(body(payload)?.refresh_token)
        .await
        .map(Json)
}

async fn logout(
    State(state): State<AppState>,
    payload: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<StatusCode, ServerError> {
    state.auth().logout(body(payload)?.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `/api/auth/*` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/anonymous", post(anonymous))
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let auth = JwtAuth::new(b"0123456789abcdef0123456789abcdef", 60_000);
        let token = auth.issue("u1", NOW).unwrap();
        let user = auth.authenticate(&token, NOW + 1).unwrap();
        assert_eq!(user.id, "u1");
        assert_eq!(user.expires_at_ms, NOW + 60_000);
        assert_eq!(
            auth.authenticate(&token, NOW + 60_000),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn expires_in_never_overstates_the_token_lifetime() {
        let auth = JwtAuth::new(b"0123456789abcdef0123456789abcdef", 3_000);
        for now in [NOW, NOW + 1, NOW + 400, NOW + 999] {
            let token = auth.issue("u1", now).unwrap();
            let expires_at = auth.authenticate(&token, now).unwrap().expires_at_ms;
            let told = auth.expires_in_secs(now) * 1000;
            assert!(
                now + told <= expires_at,
                "at {now}: told {told} ms, expires at {expires_at}"
            );
            assert!(expires_at - (now + told) < 1000, "at most a second early");
        }
    }

    #[test]
    fn forged_and_malformed_tokens_are_invalid() {
        let auth = JwtAuth::new(b"0123456789abcdef0123456789abcdef", 60_000);
        let other = JwtAuth::new(b"ffffffffffffffffffffffffffffffff", 60_000);
        let forged = other.issue("u1", NOW).unwrap();
        assert!(matches!(
            auth.authenticate(&forged, NOW),
            Err(AuthError::Invalid(_))
        ));
        for bad in ["", "abc", "a.b.c", "..."] {
            assert!(matches!(
                auth.authenticate(bad, NOW),
                Err(AuthError::Invalid(_))
            ));
        }
    }

    #[test]
    fn secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn emails_and_passwords_are_checked() {
        assert_eq!(check_email(" A@B.c ").unwrap(), "a@b.c");
        assert!(check_email("nobody").is_err());
        assert!(check_email("@b").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_authenticate(token in ".{0,200}") {
            let auth = JwtAuth::new(b"0123456789abcdef0123456789abcdef", 60_000);
            prop_assert!(auth.authenticate(&token, NOW).is_err());
        }
    }
}
