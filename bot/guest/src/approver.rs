//! [`HttpApprover`]: the in-container side of approvals, which asks the daemon over HTTP for
//! `loop syscallwrap` and `loop dockerproxy`.
//!
//! It runs before any tokio runtime exists (the gate drops capabilities per thread, so the
//! process starts with one thread): each approval runs on its own supervisor thread, which
//! builds a small current-thread runtime for its one HTTP call.

use std::time::Duration;

use loop_gate::notify::Approver;
use loop_gate::wire::{ApprovalDecision, ApprovalRequest, ApprovalResponse};
use loop_wire::container::env;
use loop_wire::routes;

/// Used when the variable is missing or malformed (the config's default).
pub const DEFAULT_APPROVAL_TIMEOUT_SEC: u64 = 300;
/// Extra time over the daemon's own timeout, so the daemon's "expired" answer (and its audit
/// record) arrives before the approver gives up on the connection.
const RESPONSE_MARGIN: Duration = Duration::from_secs(15);
/// Connecting to the host API is local; a slow connect means it is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the daemon through `POST {API_URL}/api/gate/container-approval`. Any error, non-200
/// status, undecodable body or timeout is a deny (fail closed).
#[derive(Debug, Clone)]
pub struct HttpApprover {
    url: String,
    token: String,
    timeout: Duration,
}

impl HttpApprover {
    /// `api_url` without the path; `approval_timeout` is the daemon's wait for a person.
    pub fn new(api_url: &str, token: String, approval_timeout: Duration) -> HttpApprover {
        HttpApprover {
            url: format!("{}{}", api_url.trim_end_matches('/'), routes::GATE_APPROVAL),
            token,
            timeout: approval_timeout + RESPONSE_MARGIN,
        }
    }

    /// From `API_URL`, `LOOP_GATE_TOKEN` and `LOOP_GATE_APPROVAL_TIMEOUT_SEC`. Missing values
    /// still give an approver: one that can only deny.
    pub fn from_env() -> HttpApprover {
        let api_url = std::env::var(env::API_URL).unwrap_or_default();
        let token = std::env::var(env::GATE_TOKEN).unwrap_or_default();
        let timeout = std::env::var(env::GATE_APPROVAL_TIMEOUT_SEC)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_SEC);
        HttpApprover::new(&api_url, token, Duration::from_secs(timeout))
    }

    /// The endpoint this approver posts to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One HTTP round trip; every failure is an error the caller turns into a deny.
    fn try_ask(&self, request: &ApprovalRequest) -> Result<ApprovalResponse, String> {
        if self.token.is_empty() || !self.url.starts_with("http") {
            return Err("no API_URL or LOOP_GATE_TOKEN: no one can be asked".to_owned());
        }
        // A runtime per question: `ask` runs on its own short-lived supervisor thread, and a
        // reqwest client must not outlive the runtime its connections were made on.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("cannot start a runtime: {err}"))?;
        runtime.block_on(async {
            let client = reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(self.timeout)
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
            let response = client
                .post(&self.url)
                .bearer_auth(&self.token)
                .json(request)
                .send()
                .await
                .map_err(|err| format!("approval request failed: {err}"))?;
            let status = response.status();
            if status != reqwest::StatusCode::OK {
                let body = response.text().await.unwrap_or_default();
                return Err(format!("approval endpoint answered {status}: {body}"));
            }
            response
                .json::<ApprovalResponse>()
                .await
                .map_err(|err| format!("undecodable approval answer: {err}"))
        })
    }
}

impl Approver for HttpApprover {
    fn ask(&self, request: &ApprovalRequest) -> ApprovalDecision {
        match self.try_ask(request) {
            Ok(response) => {
                tracing::info!(summary = %request.summary, decision = ?response.decision, "approval answered");
                response.decision
            }
            Err(reason) => {
                tracing::warn!(summary = %request.summary, %reason, "approval failed: denying");
                ApprovalDecision::Deny
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_gate::wire::GateAction;

    fn request() -> ApprovalRequest {
        ApprovalRequest {
            channel_id: "local-c".into(),
            action: GateAction::Exec {
                program: "/usr/bin/git".into(),
                argv: vec!["git".into(), "push".into()],
                cwd: None,
            },
            summary: "exec /usr/bin/git push".into(),
            session_key: "execve:/usr/bin/git:push".into(),
            rule: "command_rules[0]".into(),
            message: None,
            pid: 7,
        }
    }

    /// A one-shot HTTP server on a thread: answers one request with `status` and `body`,
    /// after `delay`, and hands back what it received.
    fn serve_once(
        status: u16,
        body: &'static str,
        delay: Duration,
    ) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            // Read headers and a body of Content-Length bytes.
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&received).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if rest.len() >= len {
                        break;
                    }
                }
            }
            std::thread::sleep(delay);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
            String::from_utf8_lossy(&received).to_string()
        });
        (url, handle)
    }

    #[test]
    fn a_decision_comes_back_and_the_token_is_sent() {
        let (url, server) = serve_once(200, r#"{"decision":"allow_session"}"#, Duration::ZERO);
        let approver = HttpApprover::new(&url, "tok123".into(), Duration::from_secs(5));
        assert_eq!(approver.ask(&request()), ApprovalDecision::AllowSession);
        let received = server.join().expect("server");
        assert!(received.starts_with("POST /api/gate/container-approval "));
        assert!(
            received.contains("authorization: Bearer tok123"),
            "{received}"
        );
        assert!(received.contains(r#""session_key":"execve:/usr/bin/git:push""#));
    }

    #[test]
    fn every_failure_is_a_deny() {
        // Non-200.
        let (url, server) = serve_once(401, r#"{"error":"wrong token"}"#, Duration::ZERO);
        let approver = HttpApprover::new(&url, "t".into(), Duration::from_secs(5));
        assert_eq!(approver.ask(&request()), ApprovalDecision::Deny);
        server.join().expect("server");
        // Undecodable body.
        let (url, server) = serve_once(200, r#"{"decision":"allow"}"#, Duration::ZERO);
        let approver = HttpApprover::new(&url, "t".into(), Duration::from_secs(5));
        assert_eq!(approver.ask(&request()), ApprovalDecision::Deny);
        server.join().expect("server");
        // Nobody listening.
        let approver = HttpApprover::new("http://127.0.0.1:1", "t".into(), Duration::ZERO);
        assert_eq!(approver.ask(&request()), ApprovalDecision::Deny);
        // No token or URL configured.
        let approver = HttpApprover::new("", String::new(), Duration::ZERO);
        assert_eq!(approver.ask(&request()), ApprovalDecision::Deny);
    }

    #[test]
    fn a_slow_answer_times_out_as_a_deny() {
        let (url, server) = serve_once(
            200,
            r#"{"decision":"allow_once"}"#,
            RESPONSE_MARGIN + Duration::from_secs(2),
        );
        let mut approver = HttpApprover::new(&url, "t".into(), Duration::ZERO);
        // Shorter than the server's delay.
        approver.timeout = Duration::from_secs(1);
        let started = std::time::Instant::now();
        assert_eq!(approver.ask(&request()), ApprovalDecision::Deny);
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(server);
    }
}
