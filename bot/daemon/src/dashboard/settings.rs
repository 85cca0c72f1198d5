//! `/ui/thread/{key}/settings`: a channel's settings at a glance. The configuration its turns
//! run under (the global config with its project's file layered on, trusted values only), with
//! every secret redacted (`Secret` serialises as `[REDACTED]`), what the project's file could
//! not change, and `loop doctor`'s checks for its project.

use std::path::Path as FsPath;

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};

use super::access::Access;
use super::page::{self, PageError, parse_key, thread_url};
use super::session::DashboardSession;
use crate::api::ApiState;
use crate::doctor::{Check, Status};

/// `GET /ui/thread/{key}/settings`.
pub async fn page(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    session: DashboardSession,
) -> Result<Response, PageError> {
    let key = parse_key(&raw)?;
    Access::of(&state, &session).require_read(&key).await?;
    let name = key.to_string();
    let settings = match state.orchestrator.channel_settings(&key).await {
        Ok(settings) => settings,
        Err(crate::orchestrator::OrchestratorError::Store(err)) => return Err(err.into()),
        Err(err) => {
            tracing::error!(error = %err, "cannot read a channel's settings");
            return Err(PageError::Internal);
        }
    };
    let exists = settings.project_dir.is_dir();
    let checks = crate::doctor::run(
        &state.orchestrator.config_sources(),
        exists.then_some(settings.project_dir.as_path()),
    )
    .await;
    let title = format!("Settings · {name}");
    Ok(page::render(
        page::Shell {
            title: &title,
            nav: page::Nav::Thread,
            session: &session,
            live: None,
        },
        html! {
            h1 {
                span.platform { (key.platform.as_str()) } " "
                a href=(thread_url(&name)) { (name) }
                " › settings"
            }
            p {
                "Project: " code { (settings.project_dir.display()) }
                @if !exists { span.muted { " (not created yet: the channel's first turn makes it)" } }
            }
            section.panel {
                h2 { "Effective config" }
                p.muted.small {
                    "What this channel's turns run under: the global config with the project's "
                    code { ".loop/config.json" } " on top, only its trusted values. Secrets are redacted."
                }
                @match &settings.config {
                    Ok(project) => {
                        @if !project.held_back.is_empty() {
                            p.flash {
                                "Held back until an owner trusts this version of the project file: "
                                @for (i, held) in project.held_back.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    code { (held) }
                                }
                            }
                        }
                        @for warning in &project.warnings { p.flash { (warning) } }
                        pre.config { (project.config.to_redacted_json()) }
                    }
                    Err(err) => p.flash { "The project config is broken, so no turn runs: " (err.to_string()) },
                }
            }
            section.panel {
                h2 { "Checks (" code { "loop doctor" } ")" }
                (checks_table(&checks, exists.then_some(settings.project_dir.as_path())))
            }
        },
    ))
}

fn checks_table(checks: &[Check], project: Option<&FsPath>) -> Markup {
    html! {
        @if project.is_none() {
            p.muted.small { "The project's own checks run once its directory exists." }
        }
        table.checks {
            thead { tr { th { "" } th { "check" } th { "result" } } }
            tbody {
                @for check in checks {
                    tr {
                        td {
                            @match check.status {
                                Status::Ok => span.state.ok { "ok" },
                                Status::Warn => span.state.approval { "warn" },
                                Status::Fail => span.state.failed { "fail" },
                            }
                        }
                        td { (check.name) }
                        td {
                            (check.detail)
                            @if let Some(fix) = &check.fix { div.muted.small { "fix: " (fix) } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Rig;

    /// The page shows the channel's effective config and the checks; only a dashboard session
    /// opens it. (That a set secret shows as `[REDACTED]` is the browser test's: its daemon has
    /// an API key.)
    #[tokio::test]
    async fn settings_show_the_config_and_the_checks() {
        let rig = Rig::start().await;
        let path = format!("{}/settings", super::thread_url("local:settings-check"));
        assert_eq!(rig.get(&path, None).await.status(), 401);
        let (cookie, _) = rig.login().await;
        let page = rig.get(&path, Some(&cookie)).await;
        assert_eq!(page.status(), 200);
        let body = page.text().await.expect("page");
        assert!(body.contains("Effective config"), "{body}");
        assert!(body.contains("container_image"), "{body}");
        assert!(body.contains("credentials"), "the doctor's checks: {body}");
    }
}
