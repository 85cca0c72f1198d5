//! Who may use the dashboard. `loop ui` asks the daemon (admin token) for a one-time login
//! code; the browser trades it at `/ui/login` for a session: a random id in an HttpOnly,
//! `SameSite=Strict`, `Path=/ui` cookie, and a CSRF token the pages carry for htmx to send
//! back in the `X-CSRF-Token` header on every POST.
//!
//! Every dashboard route takes one of the two extractors here and nothing else:
//! [`DashboardSession`] (the cookie, and the `Origin` when the browser sends one: pages, SSE,
//! WebSockets) and [`DashboardCsrf`] (that, plus the CSRF header: anything that changes
//! state). Bearer tokens (the admin token, containers' tokens) are never looked at, so they
//! open no dashboard route.
//!
//! Behind a TLS reverse proxy that logs people in (`dashboard_proxy_header`), a request that
//! carries the proxy's token (`X-Loop-Proxy-Token`, from `dashboard-proxy.token`, which only
//! the proxy is given) is the user the proxy names in that header, with that chat user id's
//! rights; no cookie is involved, and each such user has one session (its CSRF token). The
//! name alone, without the token, is nobody: an agent's container reaches the same listener.
//!
//! Sessions live in the daemon's memory only: a restart logs every browser out (run `loop ui`
//! again). Codes and session ids are kept as SHA-256 digests, so a lookup's timing depends on
//! the digest, never on how much of a guess matched; the CSRF token is compared in constant
//! time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::gate::tokens::{random_token, tokens_match};

/// The session cookie's name.
pub const COOKIE: &str = "loop_ui";
/// The header htmx sends the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The header a reverse proxy proves itself with (`dashboard_proxy_header`).
pub const PROXY_TOKEN_HEADER: &str = "x-loop-proxy-token";
/// How long a login code from `loop ui` may wait to be used.
pub const CODE_TTL: Duration = Duration::from_secs(120);
/// How long a browser stays logged in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Live sessions at most; logging in past that ends the oldest.
const MAX_SESSIONS: usize = 64;
/// Unused login codes at most; minting past that drops the oldest.
const MAX_CODES: usize = 16;
/// Who a session acts as when `loop ui` named nobody (or someone unusable).
pub const DEFAULT_USER: &str = "dashboard";

type Digest32 = [u8; 32];

fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

/// Who a login is for: the name decisions are shown under and, for someone else's login,
/// the chat user whose rights the session has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    /// `loop ui --user ID [--role R]...`: the session may do what that chat user may do in
    /// chat. None: the operator (whoever holds the admin token), an owner everywhere.
    pub acts_as: Option<ChatUser>,
}

/// A chat user as the permissions model knows one: a platform user id and, on Discord, the
/// ids of their server roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUser {
    pub id: String,
    pub roles: Vec<String>,
}

/// A login code waiting to be used.
struct PendingCode {
    login: Login,
    expires: Instant,
}

/// A logged-in browser.
struct Live {
    login: Login,
    /// Opened for a user the proxy named: no cookie may open it.
    proxied: bool,
    csrf: String,
    created: Instant,
    expires: Instant,
}

#[derive(Default)]
struct Table {
    codes: HashMap<Digest32, PendingCode>,
    sessions: HashMap<Digest32, Live>,
}

impl Table {
    fn sweep(&mut self, now: Instant) {
        self.codes.retain(|_, c| c.expires > now);
        self.sessions.retain(|_, s| s.expires > now);
    }

    /// Ends the oldest session when a new one would pass [`MAX_SESSIONS`].
    fn make_room(&mut self) {
        if self.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
        {
            self.sessions.remove(&oldest);
        }
    }
}

/// The dashboard's login codes and sessions. Cheap to clone; a `std::sync::Mutex` is right
/// here: every critical section is a map lookup or insert, never held across an `.await`.
#[derive(Clone, Default)]
pub struct Sessions {
    table: Arc<Mutex<Table>>,
    proxy: Option<Arc<ProxyLogin>>,
}

/// A reverse proxy that names its logged-in user in `user_header` (and their groups in
/// `roles_header`, as roles), believed only with `token`.
#[derive(Clone)]
pub struct ProxyLogin {
    pub user_header: HeaderName,
    pub roles_header: Option<HeaderName>,
    pub token: String,
}

impl ProxyLogin {
    /// The roles the request's groups header lists (comma-separated). A group no permission
    /// could name is left out, with a warning; it never widens anything.
    fn roles(&self, headers: &HeaderMap) -> Vec<String> {
        let Some(header) = &self.roles_header else {
            return Vec::new();
        };
        let mut roles: Vec<String> = Vec::new();
        for value in headers.get_all(header) {
            for role in value.to_str().unwrap_or("").split(',').map(str::trim) {
                if role.is_empty() || roles.iter().any(|r| r == role) {
                    continue;
                }
                if valid_name(role) {
                    roles.push(role.to_owned());
                } else {
                    tracing::warn!(header = %header, "the proxy named a group that is not a usable role: left out");
                }
            }
        }
        roles
    }
}

/// Why a request from the proxy was not a login.
enum ProxyRefusal {
    /// No proxy is configured, or the request did not come through it (no token header).
    NotProxied,
    Refused(Refused),
}

/// A fresh login code for `loop ui`.
#[derive(Debug, Clone)]
pub struct LoginCode {
    pub code: String,
    pub expires_in: Duration,
}

/// What trading a login code gave: the cookie's value.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub login: Login,
}

/// `loop ui --user` named an id no permission could ever match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a user id: {0:?} (letters, digits and . _ - @, up to 64)")]
pub struct BadUserId(pub String);

impl Sessions {
    /// Sessions that also take a reverse proxy's users.
    pub fn with_proxy(proxy: ProxyLogin) -> Sessions {
        Sessions {
            table: Arc::default(),
            proxy: Some(Arc::new(proxy)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of the user a request through the proxy names (opened on their first
    /// request, one per user).
    fn proxied(&self, headers: &HeaderMap) -> Result<DashboardSession, ProxyRefusal> {
        let (Some(proxy), Some(given)) = (&self.proxy, headers.get(PROXY_TOKEN_HEADER)) else {
            return Err(ProxyRefusal::NotProxied);
        };
        if !tokens_match(given.to_str().unwrap_or(""), &proxy.token) {
            tracing::warn!("dashboard request with a wrong proxy token refused");
            return Err(ProxyRefusal::Refused(Refused::NotLoggedIn));
        }
        let user = headers
            .get(&proxy.user_header)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|u| valid_name(u))
            .ok_or_else(|| {
                tracing::warn!(header = %proxy.user_header, "the proxy named no usable user");
                ProxyRefusal::Refused(Refused::NotLoggedIn)
            })?;
        let key = digest(&format!("proxy\0{user}"));
        let roles = proxy.roles(headers);
        let now = Instant::now();
        let mut table = self.lock();
        table.sweep(now);
        if !table.sessions.contains_key(&key) {
            table.make_room();
            tracing::info!(user, "dashboard login through the proxy");
            table.sessions.insert(
                key,
                Live {
                    login: Login {
                        user: user.to_owned(),
                        acts_as: Some(ChatUser {
                            id: user.to_owned(),
                            roles: Vec::new(),
                        }),
                    },
                    proxied: true,
                    csrf: random_token(),
                    created: now,
                    expires: now + SESSION_TTL,
                },
            );
        }
        let Some(live) = table.sessions.get_mut(&key) else {
            return Err(ProxyRefusal::Refused(Refused::NotLoggedIn));
        };
        // The proxy's word on each request: groups changed at the identity provider count at
        // once, in both directions.
        if let Some(chat_user) = &mut live.login.acts_as {
            chat_user.roles = roles;
        }
        Ok(DashboardSession {
            key,
            user: live.login.user.clone(),
            acts_as: live.login.acts_as.clone(),
            csrf: live.csrf.clone(),
        })
    }

    /// Mints a single-use code for `user` (a login name; anything unusable becomes
    /// [`DEFAULT_USER`]), acting as the chat user `acts_as` with `roles` when given. An
    /// unusable id or role is refused, never widened to the operator's login.
    pub fn mint_code(
        &self,
        user: Option<&str>,
        acts_as: Option<&str>,
        roles: &[String],
    ) -> Result<LoginCode, BadUserId> {
        let bad = |id: &str| BadUserId(id.chars().take(80).collect());
        if let Some(role) = roles.iter().find(|r| !valid_name(r)) {
            return Err(bad(role));
        }
        let acts_as = match acts_as {
            None if roles.is_empty() => None,
            // Roles belong to someone: the operator's own login has none to add.
            None => return Err(bad("")),
            Some(id) if valid_name(id) => Some(ChatUser {
                id: id.to_owned(),
                roles: roles.to_vec(),
            }),
            Some(id) => return Err(bad(id)),
        };
        // Someone else's login is shown under their id unless a name was given.
        let user = match (&acts_as, user) {
            (Some(chat), None) => chat.id.clone(),
            _ => user_name(user),
        };
        let code = random_token();
        let now = Instant::now();
        let mut table = self.lock();
        table.sweep(now);
        if table.codes.len() >= MAX_CODES
            && let Some(oldest) = table
                .codes
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(k, _)| *k)
        {
            table.codes.remove(&oldest);
        }
        table.codes.insert(
            digest(&code),
            PendingCode {
                login: Login { user, acts_as },
                expires: now + CODE_TTL,
            },
        );
        Ok(LoginCode {
            code,
            expires_in: CODE_TTL,
        })
    }

    /// Uses up `code` (whatever the outcome, it cannot be used again) and opens a session.
    pub fn redeem(&self, code: &str) -> Option<NewSession> {
        let now = Instant::now();
        let mut table = self.lock();
        table.sweep(now);
        let pending = table.codes.remove(&digest(code))?;
        table.make_room();
        let id = random_token();
        table.sessions.insert(
            digest(&id),
            Live {
                login: pending.login.clone(),
                proxied: false,
                csrf: random_token(),
                created: now,
                expires: now + SESSION_TTL,
            },
        );
        Some(NewSession {
            id,
            login: pending.login,
        })
    }

    /// The session behind a cookie value, if it is live.
    fn session(&self, id: &str) -> Option<DashboardSession> {
        let key = digest(id);
        let now = Instant::now();
        let table = self.lock();
        let live = table
            .sessions
            .get(&key)
            .filter(|s| s.expires > now && !s.proxied)?;
        Some(DashboardSession {
            key,
            user: live.login.user.clone(),
            acts_as: live.login.acts_as.clone(),
            csrf: live.csrf.clone(),
        })
    }

    /// Ends a session (logout).
    pub fn end(&self, session: &DashboardSession) {
        self.lock().sessions.remove(&session.key);
    }

    /// Live sessions (for the overview's footer and tests).
    pub fn count(&self) -> usize {
        let mut table = self.lock();
        table.sweep(Instant::now());
        table.sessions.len()
    }
}

/// A login name or chat user id as the dashboard takes them: short, and nothing that needs
/// escaping in a log line or a chat message.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// A login name as given to `loop ui` (`$USER`), or [`DEFAULT_USER`].
fn user_name(user: Option<&str>) -> String {
    match user {
        Some(u) if valid_name(u) => u.to_owned(),
        _ => DEFAULT_USER.to_owned(),
    }
}

/// The `Set-Cookie` value that logs a browser in.
pub fn login_cookie(session: &NewSession) -> String {
    format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        session.id,
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that logs a browser out.
pub fn logout_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A request from a logged-in browser: the session cookie is live, and an `Origin` header,
/// when the browser sent one, names this host. Use it on every dashboard page, event stream
/// and WebSocket.
#[derive(Clone)]
pub struct DashboardSession {
    key: Digest32,
    /// The name decisions are shown under.
    pub user: String,
    /// The chat user whose rights the session has; None: the operator (an owner
    /// everywhere). See `access.rs`.
    pub acts_as: Option<ChatUser>,
    csrf: String,
}

impl std::fmt::Debug for DashboardSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardSession")
            .field("user", &self.user)
            .field("acts_as", &self.acts_as)
            .finish_non_exhaustive()
    }
}

impl DashboardSession {
    /// A name for this session that reveals nothing of its cookie (the cookie's digest), to
    /// keep what belongs to one session (its terminals) apart from another's.
    pub fn id(&self) -> String {
        hex::encode(self.key)
    }

    /// The token the pages put in their `<meta name="csrf-token">` for htmx.
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// Who decisions made in this session are attributed to (approvals, the audit log, the
    /// updated chat prompt): `alice (dashboard)`.
    pub fn decided_by(&self) -> String {
        if self.user == DEFAULT_USER {
            DEFAULT_USER.to_owned()
        } else {
            format!("{} (dashboard)", self.user)
        }
    }
}

/// A state-changing request from a logged-in browser: [`DashboardSession`], plus the
/// session's CSRF token in the `X-CSRF-Token` header. Use it on every POST.
#[derive(Debug, Clone)]
pub struct DashboardCsrf(pub DashboardSession);

/// Why a dashboard request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No session cookie, or not a live one (401).
    NotLoggedIn,
    /// The `Origin` names another site (403).
    CrossOrigin,
    /// A POST without the session's CSRF token (403).
    BadCsrf,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Refused::NotLoggedIn => (
                StatusCode::UNAUTHORIZED,
                "Not logged in to the loop dashboard. Run `loop ui` on the daemon's machine for a login link.",
            ),
            Refused::CrossOrigin => (
                StatusCode::FORBIDDEN,
                "Refused: the request came from another site.",
            ),
            Refused::BadCsrf => (
                StatusCode::FORBIDDEN,
                "Refused: the request did not carry this session's CSRF token (reload the page).",
            ),
        };
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response()
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether an `Origin` header (if any) names the host the request was sent to. Browsers send
/// one on every cross-site request, every POST and every WebSocket; a same-site GET may come
/// without. Behind a reverse proxy the proxy must pass the `Host` it was asked for.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

impl<S> FromRequestParts<S> for DashboardSession
where
    Sessions: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if !same_origin(&parts.headers) {
            return Err(Refused::CrossOrigin);
        }
        let sessions = Sessions::from_ref(state);
        match sessions.proxied(&parts.headers) {
            Ok(session) => return Ok(session),
            Err(ProxyRefusal::Refused(refused)) => return Err(refused),
            Err(ProxyRefusal::NotProxied) => {}
        }
        let id = cookie(&parts.headers, COOKIE).ok_or(Refused::NotLoggedIn)?;
        sessions.session(id).ok_or(Refused::NotLoggedIn)
    }
}

impl<S> FromRequestParts<S> for DashboardCsrf
where
    Sessions: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = DashboardSession::from_request_parts(parts, state).await?;
        // A GET never changes anything; this extractor on one is a mistake, refused loudly.
        if parts.method == Method::GET || parts.method == Method::HEAD {
            return Err(Refused::BadCsrf);
        }
        let given = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if tokens_match(given, &session.csrf) {
            Ok(DashboardCsrf(session))
        } else {
            Err(Refused::BadCsrf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    #[test]
    fn a_code_works_once_and_opens_a_session_for_its_user() {
        let sessions = Sessions::default();
        let code = sessions.mint_code(Some("alice"), None, &[]).expect("code");
        let session = sessions.redeem(&code.code).expect("first use");
        assert_eq!(session.login.user, "alice");
        assert_eq!(session.login.acts_as, None, "the operator's own login");
        assert!(sessions.redeem(&code.code).is_none(), "single use");
        assert!(sessions.redeem("not-a-code").is_none());
        let live = sessions.session(&session.id).expect("live");
        assert_eq!(live.decided_by(), "alice (dashboard)");
        assert_eq!(live.csrf_token().len(), 64);
        sessions.end(&live);
        assert!(sessions.session(&session.id).is_none(), "logged out");
        // Odd names are not shown to anyone as they are.
        let code = sessions
            .mint_code(Some("<script>"), None, &[])
            .expect("code");
        let session = sessions.redeem(&code.code).expect("use");
        assert_eq!(session.login.user, DEFAULT_USER);
        assert_eq!(
            sessions.session(&session.id).expect("live").decided_by(),
            "dashboard"
        );
    }

    #[test]
    fn someone_elses_login_acts_as_their_id_and_a_bad_id_is_refused() {
        let sessions = Sessions::default();
        let code = sessions.mint_code(None, Some("U0ANN"), &[]).expect("code");
        let live = sessions
            .session(&sessions.redeem(&code.code).expect("use").id)
            .expect("live");
        assert_eq!(live.acts_as.as_ref().map(|c| c.id.as_str()), Some("U0ANN"));
        assert_eq!(live.decided_by(), "U0ANN (dashboard)");
        let roles = vec!["R-DEV".to_owned()];
        let code = sessions
            .mint_code(Some("ann"), Some("U0ANN"), &roles)
            .expect("code");
        let login = sessions.redeem(&code.code).expect("use").login;
        assert_eq!(
            (
                login.user.as_str(),
                login.acts_as.as_ref().map(|c| c.id.as_str())
            ),
            ("ann", Some("U0ANN"))
        );
        // Never widened to the operator's login.
        for bad in ["", "<U1>", "U 1", &"x".repeat(65)] {
            assert!(sessions.mint_code(None, Some(bad), &[]).is_err(), "{bad:?}");
        }
        assert_eq!(login.acts_as.expect("chat user").roles, roles);
        let bad_role = vec!["<R>".to_owned()];
        assert!(sessions.mint_code(None, Some("U1"), &bad_role).is_err());
        assert!(
            sessions.mint_code(None, None, &roles).is_err(),
            "roles need a user"
        );
        assert_eq!(sessions.lock().codes.len(), 0);
    }

    #[test]
    fn sessions_and_codes_are_bounded() {
        let sessions = Sessions::default();
        let codes: Vec<_> = (0..MAX_CODES + 3)
            .map(|_| sessions.mint_code(None, None, &[]).expect("code"))
            .collect();
        assert_eq!(sessions.lock().codes.len(), MAX_CODES);
        assert!(sessions.redeem(&codes[MAX_CODES + 2].code).is_some());
        for _ in 0..MAX_SESSIONS + 5 {
            let code = sessions.mint_code(None, None, &[]).expect("code");
            sessions.redeem(&code.code).expect("use");
        }
        assert_eq!(sessions.count(), MAX_SESSIONS);
    }

    #[test]
    fn cookies_and_origins_are_read_strictly() {
        let h = headers(&[("cookie", "a=1; loop_ui=abc ; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        let h = headers(&[("cookie", "xloop_ui=abc")]);
        assert_eq!(cookie(&h, COOKIE), None);
        let cases = [
            (vec![("host", "127.0.0.1:7")], true),
            (
                vec![("host", "127.0.0.1:7"), ("origin", "http://127.0.0.1:7")],
                true,
            ),
            (
                vec![("host", "loop.example"), ("origin", "https://loop.example")],
                true,
            ),
            (
                vec![("host", "127.0.0.1:7"), ("origin", "http://evil.example")],
                false,
            ),
            (
                vec![("host", "127.0.0.1:7"), ("origin", "http://127.0.0.1:8")],
                false,
            ),
            (vec![("host", "127.0.0.1:7"), ("origin", "null")], false),
            (vec![("origin", "http://127.0.0.1:7")], false),
        ];
        for (pairs, expected) in cases {
            assert_eq!(same_origin(&headers(&pairs)), expected, "{pairs:?}");
        }
    }
}
