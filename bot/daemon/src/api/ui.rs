//! `POST /api/ui/login-code` (admin token): a one-time login code for the dashboard, which
//! `loop ui` prints as a link. The code goes into that one URL and is used up on first use;
//! the admin token itself never appears in a URL.

use axum::Json;
use axum::extract::State;
use loop_wire::api::{UiLoginLink, UiLoginRequest};
use loop_wire::routes;

use super::state::{ApiError, ApiState, parse_body};

/// Mints a code for the user `loop ui` ran as, or for someone else (`loop ui --user ID`).
pub(super) async fn login_code(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<UiLoginLink>, ApiError> {
    let request: UiLoginRequest = if body.is_empty() {
        UiLoginRequest::default()
    } else {
        parse_body(&body)?
    };
    let code = state
        .dashboard
        .mint_code(
            request.user.as_deref(),
            request.acts_as.as_deref(),
            &request.roles,
        )
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    Ok(Json(UiLoginLink {
        path: format!("{}?code={}", routes::UI_LOGIN, code.code),
        expires_in_sec: code.expires_in.as_secs(),
    }))
}
