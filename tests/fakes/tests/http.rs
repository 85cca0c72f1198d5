//! HTTP-level tests of the fake model: a real client (reqwest) against the running server,
//! parsing the SSE stream the way an API client does.

use std::time::Duration;

use loop_fakes::model::{FakeModel, Matcher, PROMPT_TOO_LONG_MESSAGE, Rule, Script, Step};
use serde_json::{Value, json};

/// Long enough for a slow machine, short enough that a hang fails the test instead of CI.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Event {
    name: String,
    data: Value,
}

fn parse_sse(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(rest) = line.strip_prefix("event: ") {
                    name = rest.to_owned();
                } else if let Some(rest) = line.strip_prefix("data: ") {
                    data.push_str(rest);
                }
            }
            Event {
                name,
                data: serde_json::from_str(&data).expect("event data is json"),
            }
        })
        .collect()
}

fn request(messages: Value, stream: bool) -> Value {
    json!({"model": "claude-test-1", "max_tokens": 1024, "stream": stream, "messages": messages})
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\ncontext\n</system-reminder>\n"},
        {"type": "text", "text": text}
    ]})
}

async fn post(model: &FakeModel, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages?beta=true", model.url()))
        .header("x-api-key", "test-key")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn stream(model: &FakeModel, messages: Value) -> Vec<Event> {
    let response = post(model, &request(messages, true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().ok(),
        Some("text/event-stream")
    );
    parse_sse(&response.text().await.expect("body"))
}

/// The concatenated text deltas and the stop reason of a streamed answer.
fn text_and_stop(events: &[Event]) -> (String, String) {
    let text = events
        .iter()
        .filter_map(|e| e.data["delta"]["text"].as_str())
        .collect();
    let stop = events
        .iter()
        .find(|e| e.name == "message_delta")
        .and_then(|e| e.data["delta"]["stop_reason"].as_str())
        .unwrap_or_default()
        .to_owned();
    (text, stop)
}

#[tokio::test]
async fn streams_a_text_answer_with_usage() {
    let model = FakeModel::start(Script::echo().with_usage(123, 45))
        .await
        .expect("start");
    let events = stream(&model, json!([user("hello")])).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        text_and_stop(&events),
        ("echo: hello".to_owned(), "end_turn".to_owned())
    );
    assert_eq!(events[0].data["message"]["model"], "claude-test-1");
    assert_eq!(events[0].data["message"]["usage"]["input_tokens"], 123);
    assert_eq!(events[5].data["usage"]["output_tokens"], 45);

    let recorded = model.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].headers["x-api-key"], "test-key");
    assert_eq!(recorded[0].model(), Some("claude-test-1"));
    assert_eq!(
        recorded[0].conversation.as_ref().map(|c| c.prompt.as_str()),
        Some("hello")
    );
    model.shutdown().await;
}

#[tokio::test]
async fn tool_use_then_answer_from_the_tool_result() {
    let model = FakeModel::start(Script::bash_then_report("echo hi"))
        .await
        .expect("start");
    let first = stream(&model, json!([user("go")])).await;
    let start = first
        .iter()
        .find(|e| e.name == "content_block_start")
        .expect("block start");
    assert_eq!(start.data["content_block"]["type"], "tool_use");
    assert_eq!(start.data["content_block"]["name"], "Bash");
    let tool_id = start.data["content_block"]["id"]
        .as_str()
        .expect("tool id")
        .to_owned();
    let partial: String = first
        .iter()
        .filter_map(|e| e.data["delta"]["partial_json"].as_str())
        .collect();
    let input: Value = serde_json::from_str(&partial).expect("input json");
    assert_eq!(input["command"], "echo hi");
    assert_eq!(text_and_stop(&first).1, "tool_use");

    let second = stream(
        &model,
        json!([
            user("go"),
            {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "Bash", "input": input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "hi\n"}]},
        ]),
    )
    .await;
    assert_eq!(
        text_and_stop(&second),
        ("hi\n".to_owned(), "end_turn".to_owned())
    );
    model.shutdown().await;
}

#[tokio::test]
async fn non_streaming_requests_get_a_message() {
    let model = FakeModel::start(Script::always(Step::tool_use(
        "mcp__loop__schedule_task",
        json!({"prompt": "{{prompt}}", "cron": "0 9 * * *"}),
    )))
    .await
    .expect("start");
    let response = post(&model, &request(json!([user("remind me")]), false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("request-id"));
    let message: Value = response.json().await.expect("json");
    assert_eq!(message["type"], "message");
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["name"], "mcp__loop__schedule_task");
    assert_eq!(message["content"][0]["input"]["prompt"], "remind me");
    assert_eq!(message["usage"]["output_tokens"], 5);
    model.shutdown().await;
}

#[tokio::test]
async fn scripted_errors_use_the_api_error_shape() {
    let model = FakeModel::start(
        Script::new()
            .rule(Rule::contains("long").then(Step::prompt_too_long()))
            .rule(Rule::contains("busy").then(Step::overloaded()))
            .rule(Rule::contains("midway").then(Step::StreamError {
                error_type: "overloaded_error".to_owned(),
                message: "Overloaded".to_owned(),
            })),
    )
    .await
    .expect("start");
    for (prompt, status, error_type, message) in [
        (
            "too long",
            400,
            "invalid_request_error",
            PROMPT_TOO_LONG_MESSAGE,
        ),
        ("busy", 529, "overloaded_error", "Overloaded"),
    ] {
        let response = post(&model, &request(json!([user(prompt)]), true)).await;
        assert_eq!(response.status(), status, "{prompt}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": error_type, "message": message}})
        );
    }
    let events = stream(&model, json!([user("midway")])).await;
    let last = events.last().expect("events");
    assert_eq!(last.name, "error");
    assert_eq!(last.data["error"]["type"], "overloaded_error");
    model.shutdown().await;
}

#[tokio::test]
async fn a_limited_rule_fails_once_then_later_rules_answer() {
    let model = FakeModel::start(
        Script::new()
            .rule(Rule::any().then(Step::overloaded()).times(1))
            .rule(Rule::any().then(Step::text("recovered"))),
    )
    .await
    .expect("start");
    let body = request(json!([user("x")]), true);
    assert_eq!(post(&model, &body).await.status(), 529);
    let second = post(&model, &body).await;
    assert_eq!(second.status(), 200);
    let events = parse_sse(&second.text().await.expect("body"));
    assert_eq!(text_and_stop(&events).0, "recovered");
    let rules: Vec<Option<usize>> = model
        .requests()
        .iter()
        .map(|r| r.answer.as_ref().and_then(|a| a.rule))
        .collect();
    assert_eq!(rules, [Some(0), Some(1)]);
    model.shutdown().await;
}

#[tokio::test]
async fn count_tokens_probes_and_unknown_routes() {
    let model = FakeModel::start(Script::new()).await.expect("start");
    let client = reqwest::Client::new();
    let counted: Value = client
        .post(format!("{}/v1/messages/count_tokens", model.url()))
        .json(&request(json!([user("count me")]), false))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(counted["input_tokens"].as_u64().unwrap_or_default() > 0);

    let probe = client.head(model.url()).send().await.expect("sent");
    assert_eq!(probe.status(), 200);

    let unknown = client
        .get(format!("{}/v1/models", model.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(body["error"]["type"], "not_found_error");

    let paths: Vec<String> = model
        .all_requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        ["POST /v1/messages/count_tokens", "HEAD /", "GET /v1/models"]
    );
    assert!(model.requests().is_empty(), "only /v1/messages counts");
    model.shutdown().await;
}

#[tokio::test]
async fn twenty_concurrent_sessions_each_get_their_own_step() {
    let script = Script::new().rule(
        Rule::when(Matcher::starts_with("session"))
            .then(Step::bash("echo {{prompt}}"))
            .then(Step::text("{{prompt}} saw {{last_tool_result}}")),
    );
    let model = FakeModel::start(script).await.expect("start");
    let sessions = (0..20).map(|n| {
        let model = &model;
        async move {
            let prompt = format!("session {n}");
            let messages = if n % 2 == 0 {
                json!([user(&prompt)])
            } else {
                json!([
                    user(&prompt),
                    {"role": "assistant", "content": [{"type": "tool_use", "id": format!("t{n}"), "name": "Bash", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{n}"), "content": format!("out {n}")}]},
                ])
            };
            (n, stream(model, messages).await)
        }
    });
    for (n, events) in futures::future::join_all(sessions).await {
        let (text, stop) = text_and_stop(&events);
        if n % 2 == 0 {
            assert_eq!(stop, "tool_use", "session {n}");
        } else {
            assert_eq!(text, format!("session {n} saw out {n}"));
            assert_eq!(stop, "end_turn");
        }
    }
    assert_eq!(model.requests().len(), 20);
    model.shutdown().await;
}

#[tokio::test]
async fn slow_and_delayed_steps_still_deliver_everything() {
    let model = FakeModel::start(
        Script::new()
            .rule(Rule::contains("slow").then(Step::slow("one two three", 3, 20)))
            .rule(Rule::contains("late").then(Step::delay(20, Step::text("finally")))),
    )
    .await
    .expect("start");
    let slow = stream(&model, json!([user("slow")])).await;
    let deltas = slow
        .iter()
        .filter(|e| e.name == "content_block_delta")
        .count();
    assert_eq!(deltas, 3);
    assert_eq!(text_and_stop(&slow).0, "one two three");
    let late = stream(&model, json!([user("late")])).await;
    assert_eq!(text_and_stop(&late).0, "finally");
    model.shutdown().await;
}

#[tokio::test]
async fn a_hanging_stream_ends_at_shutdown() {
    let model = FakeModel::start(Script::always(Step::Hang))
        .await
        .expect("start");
    let mut response = post(&model, &request(json!([user("wait")]), true)).await;
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("message_start arrives")
        .expect("chunk");
    assert!(
        first
            .as_deref()
            .is_some_and(|c| String::from_utf8_lossy(c).contains("message_start"))
    );
    tokio::time::timeout(WAIT, model.wait_for_requests(1))
        .await
        .expect("request recorded");

    tokio::time::timeout(WAIT, model.shutdown())
        .await
        .expect("shutdown does not wait for the hanging stream");
    // The rest of the body ends (cleanly or with a reset) instead of hanging forever.
    let rest = tokio::time::timeout(WAIT, response.text()).await;
    assert!(rest.is_ok(), "the hanging stream ended at shutdown");
}

#[tokio::test]
async fn binds_the_requested_address() {
    let model = FakeModel::start_on("0.0.0.0:0".parse().expect("addr"), Script::new())
        .await
        .expect("start");
    assert!(model.addr().ip().is_unspecified());
    assert_eq!(model.url(), format!("http://127.0.0.1:{}", model.port()));
    let events = stream(&model, json!([user("x")])).await;
    assert_eq!(text_and_stop(&events).0, "ok");
    model.shutdown().await;
}

#[tokio::test]
async fn a_barrier_holds_requests_until_all_parties_arrived() {
    let model = FakeModel::start(Script::always(Step::barrier(
        "all",
        3,
        Step::text("released: {{prompt}}"),
    )))
    .await
    .expect("start");
    let first = tokio::spawn({
        let url = model.url();
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/messages"))
                .json(&request(json!([user("one")]), false))
                .send()
                .await
                .expect("request sent")
                .json::<Value>()
                .await
                .expect("json")
        }
    });
    let second = tokio::spawn({
        let url = model.url();
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/messages"))
                .json(&request(json!([user("two")]), false))
                .send()
                .await
                .expect("request sent")
                .json::<Value>()
                .await
                .expect("json")
        }
    });
    tokio::time::timeout(WAIT, model.wait_for_requests(2))
        .await
        .expect("two requests arrived");
    assert!(
        !first.is_finished() && !second.is_finished(),
        "two of three parties wait"
    );
    let third = stream(&model, json!([user("three")])).await;
    assert_eq!(text_and_stop(&third).0, "released: three");
    for (waiting, prompt) in [(first, "one"), (second, "two")] {
        let answer = tokio::time::timeout(WAIT, waiting)
            .await
            .expect("released")
            .expect("task");
        assert_eq!(answer["content"][0]["text"], format!("released: {prompt}"));
    }
    model.shutdown().await;
}
