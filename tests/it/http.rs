//! Outbound HTTP from a real compiled guest (`fixtures-http`) through the sandbox, against a
//! real HTTP server on loopback, and the policy's denials, each seen by the guest as a typed
//! error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_server::Server;
use serde_json::{Value, json};
use taskbox_runtime::http::{HttpGrant, HttpLimits};
use taskbox_runtime::{Capabilities, JobError, JobReport, Limits};

use crate::support::{http_server, sandbox};

fn grant(hosts: &[&str], limits: HttpLimits) -> Capabilities {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    Capabilities {
        http: Some(Arc::new(HttpGrant::new(&hosts, limits).unwrap())),
        ..Capabilities::default()
    }
}

fn private() -> HttpLimits {
    HttpLimits {
        allow_private_networks: true,
        ..HttpLimits::default()
    }
}

async fn run(task: &str, input: Value, capabilities: Capabilities, timeout: Duration) -> JobReport {
    sandbox::run("fixtures_http", task, input, capabilities, timeout).await
}

async fn fetch(input: Value, capabilities: Capabilities) -> Value {
    let report = run("fetch", input, capabilities, Duration::from_secs(20)).await;
    match &report.outcome {
        Ok(output) => serde_json::from_slice(output).unwrap(),
        Err(err) => panic!("the job failed: {err} ({})", report.log),
    }
}

fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_request_reaches_the_server_exactly_as_sent() {
    let server = Server::start().await;
    let caps = || grant(&["http://127.0.0.1:*"], private());
    let got = fetch(json!({"url": server.url("/hello?x=1")}), caps()).await;
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["body"], "hi");
    let posted = fetch(
        json!({
            "url": server.url("/echo"),
            "method": "POST",
            "headers": [["content-type", "application/json"], ["x-trace", "abc"]],
            "body": "{\"n\":1}",
        }),
        caps(),
    )
    .await;
    assert_eq!(
        (posted["status"].clone(), posted["body"].clone()),
        (json!(201), json!("{\"n\":1}"))
    );
    let seen = server.seen();
    assert!(
        seen[0].head.starts_with("GET /hello?x=1 HTTP/1.1\r\n"),
        "{:?}",
        seen[0]
    );
    let host = format!("host: 127.0.0.1:{}", server.port);
    assert!(
        seen[0].head.to_ascii_lowercase().contains(&host),
        "{:?}",
        seen[0]
    );
    assert!(seen[1].head.starts_with("POST /echo HTTP/1.1\r\n"));
    assert!(seen[1].head.to_ascii_lowercase().contains("x-trace: abc"));
    assert_eq!(seen[1].body, b"{\"n\":1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_grant_are_denied_before_anything_is_sent() {
    let server = Server::start().await;
    let port = server.port;
    let hosts = ["https://api.example.com", "http://127.0.0.1:*"];
    let cases = [
        (
            "http://example.org/".to_owned(),
            "Denied(\"HttpRequestDenied\")",
        ),
        (
            "http://api.example.com/".to_owned(),
            "Denied(\"HttpRequestDenied\")",
        ),
        (
            "https://api.example.com:8443/".to_owned(),
            "Denied(\"HttpRequestDenied\")",
        ),
        (
            "https://api.example.com.evil.net/".to_owned(),
            "Denied(\"HttpRequestDenied\")",
        ),
        (
            "https://evil.net/?https://api.example.com".to_owned(),
            "Denied(\"HttpRequestDenied\")",
        ),
        (format!("http://api.example.com@127.0.0.1:{port}/hello"), ""),
        (format!("http://127.0.0.1:{port}@api.example.com/hello"), ""),
        (
            format!("http://127.0.0.2:{port}/hello"),
            "Denied(\"HttpRequestDenied\")",
        ),
    ];
    for (url, expected) in cases {
        let answer = fetch(json!({"url": url}), grant(&hosts, private())).await;
        let error = error_of(&answer);
        assert!(
            !error.is_empty() && error.contains(expected),
            "{url}: {answer}"
        );
    }
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    // Without a grant at all, nothing goes out either.
    let report = run(
        "fetch",
        json!({"url": server.url("/hello")}),
        Capabilities::default(),
        Duration::from_secs(20),
    )
    .await;
    let answer: Value = serde_json::from_slice(report.outcome.as_ref().unwrap()).unwrap();
    assert!(error_of(&answer).contains("HttpRequestDenied"), "{answer}");
    assert!(
        report.log.contains("[taskbox] http denied for"),
        "{}",
        report.log
    );
    assert_eq!(report.stats.denied_egress, 1, "counted in the job's stats");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_by_literal_and_by_name_unless_the_operator_allows_them() {
    let server = Server::start().await;
    let port = server.port;
    let everything = ["http://*:*"];
    for url in [
        format!("http://127.0.0.1:{port}/hello"),
        format!("http://localhost:{port}/hello"),
        format!("http://[::1]:{port}/hello"),
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://0.0.0.0/".to_owned(),
    ] {
        let answer = fetch(
            json!({"url": url}),
            grant(&everything, HttpLimits::default()),
        )
        .await;
        assert!(
            error_of(&answer).contains("DestinationIpProhibited"),
            "{url}: {answer}"
        );
    }
    assert!(server.seen().is_empty());
    let allowed = fetch(
        json!({"url": format!("http://localhost:{port}/hello")}),
        grant(&everything, private()),
    )
    .await;
    assert_eq!(allowed["status"], 200, "{allowed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let server = Server::start().await;
    let answer = fetch(
        json!({"url": server.url("/redirect")}),
        grant(&["http://127.0.0.1:*"], private()),
    )
    .await;
    assert_eq!(answer["status"], 302, "{answer}");
    assert_eq!(answer["location"], server.url("/hello"));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_the_caps_and_requests_over_the_count_fail_with_their_codes() {
    let server = Server::start().await;
    let limits = HttpLimits {
        max_response_bytes: 64 << 10,
        max_header_bytes: 16 << 10,
        max_requests: 3,
        ..private()
    };
    let caps = || grant(&["http://127.0.0.1:*"], limits.clone());
    let big = fetch(json!({"url": server.url("/big")}), caps()).await;
    let error = error_of(&big).to_ascii_lowercase();
    assert!(
        error.contains("bodysize") || error.contains("body size"),
        "{big}"
    );
    let chunked = fetch(json!({"url": server.url("/big-chunked")}), caps()).await;
    let error = error_of(&chunked).to_ascii_lowercase();
    assert!(
        error.contains("bodysize") || error.contains("body size"),
        "{chunked}"
    );
    // A request body past the cap is refused before it is sent: the server sees none of it.
    let posted = fetch(
        json!({"url": server.url("/echo"), "method": "POST", "body": "x".repeat(100 << 10)}),
        grant(
            &["http://127.0.0.1:*"],
            HttpLimits {
                max_request_bytes: 64 << 10,
                ..private()
            },
        ),
    )
    .await;
    assert!(
        error_of(&posted).contains("HttpRequestBodySize"),
        "{posted}"
    );
    assert!(
        server.seen().iter().all(|seen| seen.body.len() < 100 << 10),
        "the server got the body"
    );
    let headers = fetch(json!({"url": server.url("/headers")}), caps()).await;
    assert!(
        error_of(&headers).contains("HttpResponseHeaderSectionSize"),
        "{headers}"
    );
    let report = run(
        "fetch_many",
        json!({"url": server.url("/hello"), "count": 5}),
        caps(),
        Duration::from_secs(20),
    )
    .await;
    let answer: Value = serde_json::from_slice(report.outcome.as_ref().unwrap()).unwrap();
    assert_eq!(answer["ok"], 3, "{answer}");
    assert!(
        error_of(&answer).contains("ConnectionLimitReached"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drip_is_cut_at_the_deadline_and_its_connection_closed() {
    let server = Server::start().await;
    // Loaded (compiled) first, so that the timings below are the requests' only.
    sandbox::module("fixtures_http");
    // The exchange's own timeout: the guest gets an error and goes on.
    let limits = HttpLimits {
        request_timeout: Duration::from_millis(500),
        ..private()
    };
    let started = Instant::now();
    let answer = fetch(
        json!({"url": server.url("/drip")}),
        grant(&["http://127.0.0.1:*"], limits),
    )
    .await;
    let error = error_of(&answer).to_ascii_lowercase();
    assert!(
        error.starts_with("failed(") && error.contains("timeout"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let mut dripped = server.dripped.lock().await;
    tokio::time::timeout(Duration::from_secs(5), dripped.recv())
        .await
        .expect("the server still writes to the connection");

    // The job's deadline: the job ends `timeout`, and the connection is closed with it.
    let started = Instant::now();
    let report = run(
        "fetch",
        json!({"url": server.url("/drip")}),
        grant(&["http://127.0.0.1:*"], private()),
        Duration::from_secs(1),
    )
    .await;
    let elapsed = started.elapsed();
    let outcome = format!("{:?}", report.outcome);
    assert!(
        outcome.contains("Timeout") || outcome.contains("timeout"),
        "{outcome}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    tokio::time::timeout(Duration::from_secs(5), dripped.recv())
        .await
        .expect("the connection outlived the job");
}

/// Header fields live in the host's memory and need no grant, so a guest that hoards them is
/// stopped by the host's caps, not by its own memory limit: a set of fields past the header
/// cap traps (wasi:http 0.2 has no error for it), and so does one more resource past the job's
/// resource cap, long before the host holds the 1.8 GB asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_hoards_header_fields_is_stopped_by_the_host_caps() {
    let oversized = run(
        "fields_flood",
        json!({"count": 1, "bytes": 1 << 20}),
        Capabilities::default(),
        Duration::from_secs(20),
    )
    .await;
    match &oversized.outcome {
        Err(JobError::Trap { message }) => {
            assert!(
                message.contains("size of fields exceeds limit"),
                "{message}"
            )
        }
        other => panic!("expected a trap at the header cap, got {other:?}"),
    }

    let hoard = run(
        "fields_flood",
        // 1,024 sets of these fit within the job's default host memory, so the table's cap
        // is the one reached.
        json!({"count": 30_000, "bytes": 50_000}),
        Capabilities::default(),
        Duration::from_secs(20),
    )
    .await;
    match &hoard.outcome {
        Err(JobError::Trap { .. }) => {}
        other => panic!("expected a trap at the resource cap, got {other:?}"),
    }
    let most = hoard
        .log
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|word| word.parse::<u32>().ok())
        })
        .max()
        .unwrap_or(0);
    assert!(
        (900..1024).contains(&most),
        "made {most} header sets before the cap: {}",
        hoard.log
    );
}

/// What the host holds for a job is counted however it got there, and the job ends with a
/// typed `host_memory_limit` soon after it passes its cap, far below what it asked the host to
/// hold; a job that hands the host little reports a small peak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_makes_the_host_hold_too_much_ends_at_its_host_memory_limit() {
    let limit = 16 << 20;
    let limits = Limits {
        timeout: Duration::from_secs(20),
        host_memory: limit,
        ..Limits::default()
    };
    let hoard = sandbox::run_with_limits(
        "fixtures_http",
        "fields_flood",
        json!({"count": 30_000, "bytes": 50_000}),
        Capabilities::default(),
        limits,
    )
    .await;
    assert_eq!(
        hoard.outcome,
        Err(JobError::HostMemoryLimit { limit }),
        "{}",
        hoard.log
    );
    let peak = hoard.stats.peak_host_memory;
    // 16 MiB is 335 sets; a guest is checked at least every epoch tick, so it gets only
    // a little further, and nowhere near the resource table's cap.
    assert!(
        (limit..limit + (16 << 20)).contains(&peak),
        "peak {peak} for a limit of {limit}"
    );

    let light = sandbox::run_with_limits(
        "fixtures_http",
        "fields_flood",
        json!({"count": 10, "bytes": 100}),
        Capabilities::default(),
        limits,
    )
    .await;
    assert!(light.outcome.is_ok(), "{:?}", light.outcome);
    assert!(
        (1..(4 << 20)).contains(&light.stats.peak_host_memory),
        "{:?}",
        light.stats
    );
}

/// Each part of a request line a guest sets is refused past its cap with the setter's own
/// error, and accepted up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_part_of_a_request_line_is_refused_past_its_cap() {
    let set = |lengths: [usize; 4]| async move {
        let [method, scheme, authority, path] = lengths;
        let input =
            json!({"method": method, "scheme": scheme, "authority": authority, "path": path});
        let report = run(
            "request_line",
            input,
            Capabilities::default(),
            Duration::from_secs(20),
        )
        .await;
        let output = report.outcome.expect("the job runs");
        serde_json::from_slice::<Value>(&output).unwrap()
    };
    let all = |accepted: bool| json!({"method": accepted, "scheme": accepted, "authority": accepted, "path": accepted});
    assert_eq!(set([32, 32, 260, 8 << 10]).await, all(true));
    assert_eq!(set([33, 33, 261, (8 << 10) + 1]).await, all(false));
    assert_eq!(set([33, 33, 261, 50 << 20]).await, all(false));
}
