//! Authentication: API keys, and the JWT mode of PROTOCOL.md 2.5/2.7.
//!
//! * Default mode: any `X-API-Key` starting with `tml-` is accepted (and a valid JWT issued
//!   by this emulator, as a static JWT credential would be).
//! * `POST /api/v1/auth/token` (authenticated with a raw `tml-` key, or a valid emulator JWT)
//!   issues a JWT: `base64url(header).base64url(claims).base64url(HMAC-SHA256)`, claims
//!   `exp`, `iat`, `sub`, `org_id`, `email`, `iss` (`passport-tinkex-emulator`) and `jti` (a
//!   serial number, so two tokens issued in the same second differ). Lifetime:
//!   [`crate::EmulatorConfig::jwt_lifetime`] (`--jwt-lifetime-ms`), changeable with
//!   `POST /_emulator/auth`.
//! * JWT mode (`client/config` flag `pjwt_auth_enabled`, e.g. `--client-config
//!   '{"pjwt_auth_enabled": true}'`): every API route but `client/config`, `auth/token` and
//!   `healthz` requires a valid unexpired emulator JWT; anything else is answered 401 with
//!   `WWW-Authenticate: Bearer error="invalid_token"`.
//! * `/_emulator/auth`: `GET` the log of which credential kind each API request carried
//!   (never the credential: a JWT is named by its `jti`), tokens issued, the lifetime;
//!   `DELETE` clears the log; `POST {"revoke_all": true}` makes every token issued so far
//!   invalid, `POST {"jwt_lifetime_ms": N}` changes the lifetime of new tokens.

use crate::state::AppState;
use crate::util::{json_response, parse_json, unix_now, ApiError};
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Entries kept in the auth log.
const MAX_LOG: usize = 100_000;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One API request as the auth check saw it. Carries no credential.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuthLogEntry {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// `api_key` (a raw `tml-` key), `jwt` (a valid emulator JWT), `invalid_jwt` (expired,
    /// revoked or not ours), `invalid` (anything else) or `missing`.
    pub credential: &'static str,
    /// The `jti` of the JWT carried (valid or not), if any.
    pub jti: Option<u64>,
    /// The answer's status.
    pub status: u16,
}

/// Why a JWT was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum JwtRejection {
    /// Not three segments, bad base64, bad JSON or a signature that is not ours.
    Unknown,
    /// `exp` has passed.
    Expired,
    /// Revoked by `POST /_emulator/auth {"revoke_all": true}`.
    Revoked,
}

/// Token issuing and checking.
pub struct AuthState {
    key: ring::hmac::Key,
    next_jti: AtomicU64,
    /// Tokens with a `jti` below this are revoked.
    revoked_below: AtomicU64,
    lifetime_ms: AtomicU64,
    log: Mutex<VecDeque<AuthLogEntry>>,
    /// Hashes of raw keys deleted with `DELETE /api/v1/auth/apikey/me` (PROTOCOL.md 2.9).
    deleted_keys: Mutex<std::collections::HashSet<u64>>,
}

impl AuthState {
    /// A fresh signing key and the given lifetime.
    pub fn new(lifetime: Duration) -> Self {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        if ring::rand::SystemRandom::new().fill(&mut secret).is_err() {
            // No system randomness: a per-process key is still unguessable enough for a test
            // server (tokens are only meant to be told apart, not to protect anything).
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            secret[..16].copy_from_slice(&nanos.to_le_bytes());
        }
        AuthState {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            next_jti: AtomicU64::new(1),
            revoked_below: AtomicU64::new(0),
            lifetime_ms: AtomicU64::new(lifetime.as_millis().max(1000) as u64),
            log: Mutex::new(VecDeque::new()),
            deleted_keys: Mutex::new(Default::default()),
        }
    }

    /// Deletes a raw key: every later request carrying it is refused with 401.
    pub fn delete_key(&self, key: &str) {
        let mut d = self.deleted_keys.lock().unwrap();
        if d.len() < 1_000_000 {
            d.insert(fnv(key));
        }
    }

    /// Whether a raw key was deleted.
    pub fn key_deleted(&self, key: &str) -> bool {
        self.deleted_keys.lock().unwrap().contains(&fnv(key))
    }

    /// A stable numeric id of a raw key (`key_id` of `auth/apikey/me`).
    pub fn key_id(key: &str) -> u64 {
        fnv(key) >> 12
    }

    /// Issues a JWT for the raw credential `key` (only a hash of it goes into the claims).
    pub fn issue(&self, key: &str) -> String {
        let jti = self.next_jti.fetch_add(1, Ordering::SeqCst);
        let iat = unix_now().floor() as u64;
        let lifetime = self
            .lifetime_ms
            .load(Ordering::SeqCst)
            .div_ceil(1000)
            .max(1);
        let who = Identity::of_key(key);
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = json!({
            "iss": "passport-tinkex-emulator",
            "sub": who.user_urn,
            "org_id": who.org_id,
            "email": who.email,
            "iat": iat,
            "exp": iat + lifetime,
            "jti": jti.to_string(),
        });
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let sig = ring::hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// Checks a JWT: our signature, not revoked, not expired. Answers its `jti`.
    pub fn verify(&self, token: &str) -> Result<u64, (JwtRejection, Option<u64>)> {
        let unknown = || (JwtRejection::Unknown, None);
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unknown());
        };
        let sig = B64.decode(s).map_err(|_| unknown())?;
        ring::hmac::verify(&self.key, format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| unknown())?;
        let claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(p).map_err(|_| unknown())?)
                .map_err(|_| unknown())?;
        let jti = claims["jti"].as_str().and_then(|j| j.parse::<u64>().ok());
        let Some(jti) = jti else {
            return Err(unknown());
        };
        if jti < self.revoked_below.load(Ordering::SeqCst) {
            return Err((JwtRejection::Revoked, Some(jti)));
        }
        match claims["exp"].as_f64() {
            Some(exp) if unix_now() < exp => Ok(jti),
            _ => Err((JwtRejection::Expired, Some(jti))),
        }
    }

    fn record(&self, entry: AuthLogEntry) {
        let mut log = self.log.lock().unwrap();
        if log.len() >= MAX_LOG {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

/// Who a credential belongs to (PROTOCOL.md 2.8): the claims of the JWTs issued for it, and
/// the owner of the sessions, runs and checkpoints created with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// `tml:organization_user:emu-<hash of the key>` (claim `sub`).
    pub user_urn: String,
    /// `emu-org-<hash>` (claim `org_id`).
    pub org_id: String,
    /// Claim `email`.
    pub email: String,
}

impl Identity {
    /// The identity of a raw `tml-` key (only a hash of it is kept).
    pub fn of_key(key: &str) -> Self {
        let who = fnv(key);
        Identity {
            user_urn: format!("tml:organization_user:emu-{who:016x}"),
            org_id: format!("emu-org-{:08x}", who >> 32),
            email: format!("user-{:08x}@tinkex.invalid", who as u32),
        }
    }

    /// The caller of a request: the claims of its JWT (`X-API-Key: eyJ…`, already verified
    /// by [`require_credential`]) or the identity of its raw key.
    pub fn of_headers(headers: &axum::http::HeaderMap) -> Self {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if key.starts_with("eyJ") {
            if let Some(claims) = tinkex::core::auth::jwt_claims(key) {
                let text = |c: &str| claims.get(c).and_then(|v| v.as_str()).map(str::to_string);
                if let (Some(user_urn), Some(org_id)) = (text("sub"), text("org_id")) {
                    return Identity {
                        user_urn,
                        org_id,
                        email: text("email").unwrap_or_default(),
                    };
                }
            }
        }
        Identity::of_key(key)
    }
}

/// FNV-1a: names a credential in claims without carrying it.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The paths that take the raw credential even in JWT mode.
const RAW_PATHS: [&str; 2] = ["/api/v1/client/config", "/api/v1/auth/token"];

/// The one route that answers without an API key.
const HEALTH_PATH: &str = "/api/v1/healthz";

fn full_path(req: &Request<Body>) -> String {
    req.extensions()
        .get::<OriginalUri>()
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

fn invalid_token(detail: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, detail).into_response();
    resp.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    resp
}

/// The authentication middleware of every `/api/v1` route (see the module docs). Only the
/// exact health route (`GET`/`HEAD /api/v1/healthz`) answers without a key.
pub async fn require_credential(
    State(app): State<Arc<AppState>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let path = full_path(&req);
    if path == HEALTH_PATH && matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let key = req
        .headers()
        .get("x-api-key")
        .map(|v| v.to_str().map(str::to_string));
    let raw_route = RAW_PATHS.contains(&path.as_str());
    let jwt_mode = app.flags.client_bool("pjwt_auth_enabled");
    let (credential, jti, refusal): (&'static str, Option<u64>, Option<Response>) = match &key {
        None => (
            "missing",
            None,
            Some(
                ApiError::new(StatusCode::UNAUTHORIZED, "missing X-API-Key header").into_response(),
            ),
        ),
        Some(Ok(k)) if k.starts_with("tml-") && app.auth.key_deleted(k) => (
            "deleted_key",
            None,
            Some(
                ApiError::new(StatusCode::UNAUTHORIZED, "this API key was deleted").into_response(),
            ),
        ),
        Some(Ok(k)) if k.starts_with("tml-") && k.len() > 4 => {
            if jwt_mode && !raw_route {
                (
                    "api_key",
                    None,
                    Some(invalid_token(
                        "this server requires a JWT from POST /api/v1/auth/token (pjwt_auth_enabled)",
                    )),
                )
            } else {
                ("api_key", None, None)
            }
        }
        Some(Ok(k)) if k.starts_with("eyJ") => match app.auth.verify(k) {
            Ok(jti) => ("jwt", Some(jti), None),
            Err((why, jti)) => (
                "invalid_jwt",
                jti,
                Some(invalid_token(match why {
                    JwtRejection::Expired => "the JWT has expired",
                    JwtRejection::Revoked => "the JWT has been revoked",
                    JwtRejection::Unknown => "the JWT was not issued by this server",
                })),
            ),
        },
        Some(_) => (
            "invalid",
            None,
            Some(
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid API key: keys start with 'tml-'",
                )
                .into_response(),
            ),
        ),
    };
    let resp = match refusal {
        Some(r) => r,
        None => next.run(req).await,
    };
    app.auth.record(AuthLogEntry {
        method,
        path,
        credential,
        jti,
        status: resp.status().as_u16(),
    });
    resp
}

/// `POST /api/v1/auth/token`: `{"jwt": …}` for the raw credential.
pub async fn auth_token(State(app): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    json_response(StatusCode::OK, &json!({ "jwt": app.auth.issue(key) }))
}

/// The `/_emulator/auth` control route.
pub fn control_routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/auth",
        post(control_post).get(control_get).delete(control_delete),
    )
}

async fn control_get(State(app): State<Arc<AppState>>) -> Response {
    let log: Vec<_> = app.auth.log.lock().unwrap().iter().cloned().collect();
    json_response(
        StatusCode::OK,
        &json!({
            "log": log,
            "issued": app.auth.next_jti.load(Ordering::SeqCst) - 1,
            "revoked_below": app.auth.revoked_below.load(Ordering::SeqCst),
            "jwt_lifetime_ms": app.auth.lifetime_ms.load(Ordering::SeqCst),
        }),
    )
}

async fn control_delete(State(app): State<Arc<AppState>>) -> Response {
    app.auth.log.lock().unwrap().clear();
    json_response(StatusCode::OK, &json!({}))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    #[serde(default)]
    revoke_all: bool,
    #[serde(default)]
    jwt_lifetime_ms: Option<u64>,
}

async fn control_post(State(app): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let body: ControlBody = parse_json(&body)?;
    if let Some(ms) = body.jwt_lifetime_ms {
        app.auth.lifetime_ms.store(ms.max(1000), Ordering::SeqCst);
    }
    if body.revoke_all {
        let next = app.auth.next_jti.load(Ordering::SeqCst);
        app.auth.revoked_below.store(next, Ordering::SeqCst);
    }
    Ok(control_get(State(app)).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_expire_and_revoke() {
        let a = AuthState::new(Duration::from_secs(3600));
        let t1 = a.issue("tml-x");
        let t2 = a.issue("tml-x");
        assert_ne!(t1, t2, "two tokens of one second differ");
        assert_eq!(a.verify(&t1), Ok(1));
        let mut forged = t1.clone();
        forged.push('A');
        assert!(a.verify(&forged).is_err());
        assert!(
            AuthState::new(Duration::from_secs(60)).verify(&t1).is_err(),
            "another key"
        );
        a.revoked_below.store(2, Ordering::SeqCst);
        assert_eq!(a.verify(&t1), Err((JwtRejection::Revoked, Some(1))));
        assert_eq!(a.verify(&t2), Ok(2));
        let claims = tinkex::core::auth::jwt_claims(&t2).unwrap();
        assert!(claims["iss"].as_str().unwrap().starts_with("passport-"));
        assert!(!t2.contains("tml-x"));
        for c in ["exp", "iat", "sub", "org_id", "email"] {
            assert!(claims.contains_key(c), "{c}");
        }
    }
}
