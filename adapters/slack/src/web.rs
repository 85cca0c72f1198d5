//! Web API calls with Slack's rate-limit rule applied to every one of them: an HTTP 429 is
//! retried after its `Retry-After`, a few times, before the caller sees `RateLimited`.

use std::future::Future;
use std::time::Duration;

use loop_adapter::AdapterError;
use slack_morphism::errors::SlackClientError;

/// Attempts of one call before a 429 is reported to the caller.
const MAX_ATTEMPTS: u32 = 5;
/// What to wait when a 429 carries no usable `Retry-After` (Slack always sends one).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest single wait: a longer `Retry-After` is reported as `RateLimited` so the
/// orchestrator's outbox retries later instead of a request hanging for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Runs `call` until it succeeds, fails with something other than a 429, or has been
/// rate-limited [`MAX_ATTEMPTS`] times.
pub(crate) async fn with_retry<T, F, Fut>(
    method: &'static str,
    mut call: F,
) -> Result<T, AdapterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SlackClientError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(SlackClientError::RateLimitError(limit)) => {
                let wait = limit.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                if attempt >= MAX_ATTEMPTS || wait > MAX_RETRY_AFTER {
                    return Err(AdapterError::RateLimited {
                        retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                tracing::info!(
                    method,
                    attempt,
                    retry_after_ms = wait.as_millis() as u64,
                    "slack rate limit; retrying after Retry-After"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(err) => return Err(map_error(method, err)),
        }
    }
}

/// Slack's own refusals (`{"ok": false, "error": ...}`) are `Rejected` with Slack's error
/// code; transport failures are `Unreachable`.
pub(crate) fn map_error(method: &str, err: SlackClientError) -> AdapterError {
    match err {
        SlackClientError::ApiError(api) => {
            AdapterError::Rejected(format!("{method}: {}", api.code))
        }
        SlackClientError::RateLimitError(limit) => AdapterError::RateLimited {
            retry_after_ms: limit
                .retry_after
                .map_or(1000, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        },
        other => AdapterError::Unreachable(format!("{method}: {other}")),
    }
}

/// The Slack error code of a refusal, if that is what `err` is.
pub(crate) fn slack_code(err: &AdapterError) -> Option<&str> {
    match err {
        AdapterError::Rejected(text) => text.rsplit(": ").next(),
        _ => None,
    }
}
