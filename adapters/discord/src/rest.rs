//! Every REST call loop makes, retried on HTTP 429.
//!
//! serenity's own rate limiter must be off for its proxy setting to take effect (`api_url`:
//! tests and HTTP proxies), so loop honours rate limits itself: a 429 is retried after a wait.
//! serenity 0.12 drops the response headers of a failed request and cannot decode Discord's
//! 429 body (it has no `code`), so the exact `Retry-After` is not visible here; the wait starts
//! at [`FIRST_WAIT`] and doubles up to [`MAX_WAIT`], which covers Discord's per-route buckets
//! (a few seconds at most). After [`ATTEMPTS`] tries the caller gets `RateLimited`. Against
//! discord.com itself (no `api_url`) serenity's limiter is on as well and waits out
//! `Retry-After` and the bucket headers before a 429 ever reaches this loop.

use std::future::Future;
use std::time::Duration;

use loop_adapter::AdapterError;
use serenity::http::HttpError;

pub const FIRST_WAIT: Duration = Duration::from_millis(500);
pub const MAX_WAIT: Duration = Duration::from_secs(30);
pub const ATTEMPTS: u32 = 8;

/// Runs `call` until it succeeds, fails with something other than 429, or runs out of tries.
pub async fn with_retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, AdapterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = serenity::Result<T>>,
{
    let mut wait = FIRST_WAIT;
    for attempt in 1..=ATTEMPTS {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if is_rate_limit(&err) && attempt < ATTEMPTS => {
                tracing::info!(
                    call = what,
                    wait_ms = wait.as_millis() as u64,
                    "discord: rate limited; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
            }
            Err(err) => return Err(map_error(what, &err)),
        }
    }
    Err(AdapterError::RateLimited {
        retry_after_ms: MAX_WAIT.as_millis() as u64,
    })
}

fn is_rate_limit(err: &serenity::Error) -> bool {
    matches!(err, serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) if response.status_code.as_u16() == 429)
}

/// A serenity error as the orchestrator's domain error (no token is ever in it).
pub fn map_error(what: &str, err: &serenity::Error) -> AdapterError {
    match err {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => {
            let status = response.status_code.as_u16();
            if status == 429 {
                AdapterError::RateLimited {
                    retry_after_ms: MAX_WAIT.as_millis() as u64,
                }
            } else if status >= 500 {
                AdapterError::Unreachable(format!("{what}: HTTP {status}"))
            } else {
                AdapterError::Rejected(format!(
                    "{what}: HTTP {status} ({}: {})",
                    response.error.code, response.error.message
                ))
            }
        }
        serenity::Error::Http(HttpError::Request(err)) => {
            AdapterError::Unreachable(format!("{what}: {err}"))
        }
        other => AdapterError::Rejected(format!("{what}: {other}")),
    }
}
