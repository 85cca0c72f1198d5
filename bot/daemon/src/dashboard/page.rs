//! The shell every dashboard page shares (head, navigation, the CSRF meta tag, the live
//! connection's address), the security headers of every HTML answer, and the error a page
//! shows. Pages are server-rendered with maud, which escapes every interpolated string.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::assets::{ASSETS, Assets};
use super::session::DashboardSession;
use loop_store::StoreError;

/// The pages in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Thread,
    Approvals,
}

/// What a page's shell needs.
pub struct Shell<'a> {
    pub title: &'a str,
    pub nav: Nav,
    pub session: &'a DashboardSession,
    /// The page's event stream and the ids of the elements it updates.
    pub live: Option<(String, &'a [&'a str])>,
}

/// Strict by default: only the daemon's own scripts and styles, no inline script at all, so
/// even markup that slipped through could not run.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// [`CSP`] that also lets `<style>` elements carrying `nonce` apply: for a library that adds
/// its own (xterm.js), whose elements the page's script stamps with the response's nonce.
pub fn csp_with_style_nonce(nonce: &str) -> String {
    CSP.replace(
        "style-src 'self'",
        &format!("style-src 'self' 'nonce-{nonce}'"),
    )
}

/// The headers of every dashboard HTML answer.
pub fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A whole page.
pub fn render(shell: Shell<'_>, content: Markup) -> Response {
    render_with(shell, html! {}, content)
}

/// A whole page with more in its `<head>` (a page's own styles and scripts).
pub fn render_with(shell: Shell<'_>, head: Markup, content: Markup) -> Response {
    let (live_url, live_targets) = match &shell.live {
        Some((url, targets)) => (Some(url.as_str()), Some(targets.join(" "))),
        None => (None, None),
    };
    let current = |nav: Nav| (shell.nav == nav).then_some("page");
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                meta name="csrf-token" content=(shell.session.csrf_token());
                // htmx must not inject styles or evaluate attributes: the CSP forbids both.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true}"#;
                title { (shell.title) " · loop" }
                link rel="stylesheet" href=(Assets::url(&ASSETS.css));
                script src=(Assets::url(&ASSETS.htmx)) defer {}
                script src=(Assets::url(&ASSETS.js)) defer {}
                (head)
            }
            body data-live=[live_url] data-live-targets=[live_targets] {
                header.top {
                    a.brand href="/ui/" { "loop" }
                    nav {
                        a href="/ui/" aria-current=[current(Nav::Overview)] { "Overview" }
                        a href="/ui/approvals" aria-current=[current(Nav::Approvals)] { "Approvals" }
                    }
                    div.who {
                        span.live-dot title="live updates" {}
                        span title=[shell.session.acts_as.as_ref().map(|chat| format!("with the rights of {}", chat.id))] { (shell.session.user) }
                        button hx-post="/ui/logout" { "Log out" }
                    }
                }
                main { (content) }
            }
        }
    };
    secure(markup.into_response())
}

/// A fragment for htmx or the event stream (no shell).
pub fn fragment(markup: Markup) -> Response {
    secure(markup.into_response())
}

/// What a dashboard handler can fail with.
#[derive(Debug)]
pub enum PageError {
    NotFound(String),
    BadRequest(String),
    /// The session's user may not do this here (403; see `access.rs`).
    Forbidden(String),
    Internal,
}

impl From<StoreError> for PageError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => PageError::NotFound(format!("{what} not found")),
            other => {
                tracing::error!(error = %other, "store error in the dashboard");
                PageError::Internal
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            PageError::NotFound(what) => (StatusCode::NOT_FOUND, what),
            PageError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            PageError::Forbidden(why) => (StatusCode::FORBIDDEN, why),
            PageError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (see the daemon log)".to_owned(),
            ),
        };
        secure((status, html! { p.flash { (text) } }).into_response())
    }
}

/// Unix milliseconds as a UTC time for people (the page's script shows times relative too).
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// A time as "3 min ago" (kept current by the page's script), with the exact time as title.
pub fn ago(ms: i64) -> Markup {
    html! { time data-at=(ms) title=(time(ms)) { (time(ms)) } }
}

/// A dollar amount.
pub fn dollars(usd: f64) -> String {
    if usd == 0.0 {
        "$0".to_owned()
    } else if usd < 0.01 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

/// A channel key from a path, or 404.
pub fn parse_key(raw: &str) -> Result<loop_adapter::ChannelKey, PageError> {
    raw.parse::<loop_adapter::ChannelKey>()
        .map_err(|_| PageError::NotFound(format!("no channel {raw:?}")))
}

/// The link to a thread (or channel) page; the key goes in one path segment.
pub fn thread_url(key: &str) -> String {
    format!("/ui/thread/{}", loop_wire::routes::path_segment(key))
}
