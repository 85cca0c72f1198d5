//! The web dashboard, served by `loop serve` under `/ui/` from the host API's listener:
//! server-rendered HTML (maud) with htmx for the buttons and forms and one Server-Sent Events
//! stream per page for live updates. Its assets are built into the binary (`assets.rs`).
//!
//! Authentication is `session.rs`: `loop ui` mints a one-time login code (admin token), the
//! browser trades it for a session cookie, and every route here takes [`DashboardSession`] or,
//! for anything that changes state, [`DashboardCsrf`]. No route here reads a bearer token.
//!
//! The dashboard reads through the same [`ApiState`] as the host API (the orchestrator for
//! running turns and events, the store for history, the gate hub for approvals) and acts
//! through the same paths as the chat platforms (`Orchestrator::accept`, `gate::answer`), so
//! what it does is what a person in a channel could do.

pub mod access;
pub mod approvals;
pub mod assets;
pub mod diff;
pub mod events;
pub mod markdown;
pub mod overview;
pub mod page;
pub mod session;
pub mod settings;
pub mod talk;
pub mod terminal;
pub mod thread;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use tower_http::compression::CompressionLayer;

use crate::api::ApiState;
pub use session::{DashboardCsrf, DashboardSession, Sessions};

/// The dashboard's routes, to merge into the host API's router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(overview::page))
        .route("/ui/thread/{key}", get(thread::page))
        .route("/ui/thread/{key}/send", post(talk::send))
        .route("/ui/thread/{key}/stop", post(talk::stop))
        .route(loop_wire::routes::UI_DIFF, get(diff::page))
        .route(loop_wire::routes::UI_SETTINGS, get(settings::page))
        .route(loop_wire::routes::UI_TERMINAL, get(terminal::page))
        .route(loop_wire::routes::UI_TERMINAL_SOCKET, get(terminal::socket))
        .route("/ui/channels", post(talk::new_channel))
        .route("/ui/approvals", get(approvals::page))
        .route("/ui/approvals/{id}", post(approvals::decide))
        .route("/ui/events", get(events::stream))
        .route(loop_wire::routes::UI_LOGIN, get(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{name}", get(assets::serve))
        // Pages, fragments and assets go gzipped to browsers that ask; the event streams stay
        // as they are (the default predicate leaves `text/event-stream` alone: a compressor
        // would hold events back).
        .layer(CompressionLayer::new())
        .with_state(state)
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    code: Option<String>,
}

/// `GET /ui/login?code=...`: uses up the code and sets the session cookie, then redirects to
/// the overview so the code leaves the address bar (and the history entry).
async fn login(State(state): State<ApiState>, Query(query): Query<LoginQuery>) -> Response {
    let session = query.code.and_then(|code| state.dashboard.redeem(&code));
    let Some(session) = session else {
        tracing::info!("dashboard login refused: unknown, used or expired code");
        return page::secure(
            (
                StatusCode::UNAUTHORIZED,
                html! {
                    main.login {
                        h1 { "This login link was used or has expired" }
                        p { "Run " code { "loop ui" } " again on the daemon's machine for a new one." }
                    }
                },
            )
                .into_response(),
        );
    };
    tracing::info!(user = %session.login.user, acts_as = ?session.login.acts_as, "dashboard login");
    page::secure(
        (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, session::login_cookie(&session)),
                (header::LOCATION, "/ui/".to_owned()),
            ],
        )
            .into_response(),
    )
}

/// `POST /ui/logout`: ends the session; htmx follows `HX-Redirect` to the logged-out page.
async fn logout(State(state): State<ApiState>, DashboardCsrf(session): DashboardCsrf) -> Response {
    state.dashboard.end(&session);
    (
        StatusCode::NO_CONTENT,
        [
            (header::SET_COOKIE, session::logout_cookie()),
            (
                axum::http::HeaderName::from_static("hx-redirect"),
                "/ui/".to_owned(),
            ),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests;
