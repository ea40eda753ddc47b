//! The read API behind its bearer tokens (docs/consumers.md, "Authentication"): a caller
//! without a known token gets 401 and nothing runs for it; the operator endpoints stay open;
//! a consumer with a read API and no tokens refuses to start unless told the API may be open.

use std::time::Duration;

use axum::routing::get;
use orderflow_runtime::testing::{self, Recorder, isolated_args};
use orderflow_runtime::{Runtime, Secret};
use orderflow_testkit::{API_TOKEN, fresh_topic, wait_until};

/// A read API with one route that answers a customer's data.
fn api() -> axum::Router {
    axum::Router::new()
        .route("/v1/customers/c-1", get(|| async { axum::Json(serde_json::json!({"email": "ada@example.com"})) }))
}

#[tokio::test]
async fn the_read_api_answers_only_a_known_bearer_token_and_the_probes_stay_open() {
    let topic = fresh_topic("auth", 1).await;
    let mut args = isolated_args("auth", std::slice::from_ref(&topic));
    args.api_tokens = Some(Secret(format!("shop:{API_TOKEN},analyst:other-token-42")));
    // A read the consistency layer let through would wait this long for a write never made:
    // far longer than the bound below on an anonymous caller's answer.
    args.read_wait_ms = 30_000;
    let handler = Recorder::new("auth");
    let runtime = Runtime::connect(&handler, args).await.unwrap();
    let running = testing::spawn_runtime(runtime, handler, api()).await;
    let anonymous = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", running.base_url);
    wait_until("the API to listen", Duration::from_secs(30), || async {
        anonymous.get(url("/healthz")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;

    // No token, a wrong one, another scheme: 401 with WWW-Authenticate, no data.
    for authorization in [None, Some("Bearer not-a-token"), Some(&*format!("Basic {API_TOKEN}"))] {
        let mut request = anonymous.get(url("/v1/customers/c-1"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body = response.text().await.unwrap();
        assert!(body.contains("bearer token") && !body.contains("ada@"), "{body}");
    }
    // A consistency token does not make an anonymous caller wait or learn offsets: a token
    // for this consumer's own topic, at an offset it will never reach.
    let never = orderflow_service::consistency::Token::new([(topic.as_str(), 0, 999_999)]).encode();
    let waited = std::time::Instant::now();
    let response = anonymous.get(url(&format!("/v1/customers/c-1?after={never}"))).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(waited.elapsed() < Duration::from_secs(10), "answered before any wait: {:?}", waited.elapsed());
    assert!(!response.headers().contains_key("orderflow-applied-through"));

    // Each configured token: 200.
    for token in [API_TOKEN, "other-token-42"] {
        let response = anonymous.get(url("/v1/customers/c-1")).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("ada@example.com"));
    }
    // Probes and metrics need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = anonymous.get(url(path)).send().await.unwrap().status().as_u16();
        assert_ne!(status, 401, "{path}");
    }
}

#[tokio::test]
async fn a_read_api_without_tokens_refuses_to_start_unless_told_it_may_be_open() {
    let topic = fresh_topic("auth-none", 1).await;

    // No tokens: the runtime ends at once, saying what to set.
    let mut args = isolated_args("auth-none", std::slice::from_ref(&topic));
    args.api_tokens = None;
    let handler = Recorder::new("auth-none");
    let runtime = Runtime::connect(&handler, args.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = runtime.run_with_listener(handler, api(), listener, std::future::pending()).await.unwrap_err();
    let said = format!("{refused:#}");
    assert!(said.contains("no read API tokens configured") && said.contains("API_TOKENS"), "{said}");

    // Opened on purpose: it serves without a token.
    args.api_insecure_no_auth = true;
    let handler = Recorder::new("auth-none");
    let runtime = Runtime::connect(&handler, args).await.unwrap();
    let running = testing::spawn_runtime(runtime, handler, api()).await;
    let anonymous = reqwest::Client::new();
    let status = wait_until("the open API to answer", Duration::from_secs(30), || async {
        anonymous.get(format!("{}/v1/customers/c-1", running.base_url)).send().await.ok().map(|r| r.status())
    })
    .await;
    assert_eq!(status, 200);
}
