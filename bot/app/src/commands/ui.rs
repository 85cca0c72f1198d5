//! `loop ui`: a one-time login link for the dashboard, asked of the running daemon with the
//! admin token, printed, and opened in a browser when one is there. The link's code works once
//! and expires in minutes; the admin token never goes into a URL.

use std::process::{Command, Stdio};

use loop_wire::api::{UiLoginLink, UiLoginRequest};
use loop_wire::routes;

use super::client::{Client, ClientError};

/// The login URL: for this user (`$USER`, whom the dashboard names as who decided), or for
/// someone else acting as the chat user `acts_as` with `roles` (shown as `name`, else the id).
pub async fn login_url(
    client: &Client,
    acts_as: Option<&str>,
    name: Option<&str>,
    roles: &[String],
) -> Result<String, ClientError> {
    let user = match acts_as {
        Some(_) => name.map(str::to_owned),
        None => std::env::var("USER").ok().filter(|u| !u.is_empty()),
    };
    let request = UiLoginRequest {
        user,
        acts_as: acts_as.map(str::to_owned),
        roles: roles.to_vec(),
    };
    let body = serde_json::to_value(&request).unwrap_or_default();
    let value = client.post_json(routes::UI_LOGIN_CODE, &body).await?;
    let link: UiLoginLink = serde_json::from_value(value).map_err(|err| ClientError::Refused {
        status: 200,
        message: format!("unexpected answer: {err}"),
    })?;
    Ok(format!("http://{}{}", client.addr(), link.path))
}

/// Opens `url` with `$BROWSER`, else `xdg-open` when a display is there; returns what it ran.
/// Nothing when no browser is at hand (a server over ssh): the printed link is enough.
pub fn open_in_browser(url: &str) -> Option<String> {
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
    let program = match browser {
        Some(browser) => browser,
        None if has_display => "xdg-open".to_owned(),
        None => return None,
    };
    // The browser outlives `loop ui`; its output is not ours to show.
    Command::new(&program)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(|_| program)
}
