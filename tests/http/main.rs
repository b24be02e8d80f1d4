//! Outbound HTTP from a real compiled guest (`fixtures-http`) through the sandbox, against a
//! real HTTP server on loopback, and the policy's denials, each seen by the guest as a typed
//! error.

#[path = "../support/guests.rs"]
mod guests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskbox_runtime::http::{HttpGrant, HttpLimits};
use taskbox_runtime::{
    Capabilities, JobInfo, JobReport, JobRequest, Limits, Runtime, RuntimeConfig, TaskModule,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

static RUNTIME: std::sync::LazyLock<Runtime> =
    std::sync::LazyLock::new(|| Runtime::new(&RuntimeConfig::default()).unwrap());

fn module() -> Arc<TaskModule> {
    RUNTIME
        .load(&std::fs::read(guests::wasm("fixtures_http")).unwrap())
        .unwrap()
}

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// A plain HTTP/1.1 server on 127.0.0.1 that records what it receives and answers by path.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Told when a `/drip` connection is closed by the client.
    dripped: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (closed, dripped) = mpsc::unbounded_channel();
        let recorded = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (recorded, closed) = (Arc::clone(&recorded), closed.clone());
                tokio::spawn(serve(stream, port, recorded, closed));
            }
        });
        Self {
            port,
            seen,
            dripped: tokio::sync::Mutex::new(dripped),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: mpsc::UnboundedSender<()>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buffer[head_end..head_end + length].to_vec();
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_owned();
    seen.lock().unwrap().push(Seen {
        head,
        body: body.clone(),
    });
    let reply = |status: &str, headers: &str, body: &[u8]| {
        let mut reply = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n",
            body.len()
        )
        .into_bytes();
        reply.extend_from_slice(body);
        reply
    };
    let answer = match path.as_str() {
        "/hello" => reply("200 OK", "", b"hi"),
        "/echo" => reply("201 Created", "", &body),
        "/redirect" => reply(
            "302 Found",
            &format!("location: http://127.0.0.1:{port}/hello\r\n"),
            b"",
        ),
        "/big" => reply("200 OK", "", &vec![b'x'; 256 << 10]),
        "/big-chunked" => {
            let mut reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..64 {
                reply.extend_from_slice(b"1000\r\n");
                reply.extend_from_slice(&[b'y'; 0x1000]);
                reply.extend_from_slice(b"\r\n");
            }
            reply.extend_from_slice(b"0\r\n\r\n");
            reply
        }
        "/headers" => reply(
            "200 OK",
            &format!("x-padding: {}\r\n", "p".repeat(40 << 10)),
            b"",
        ),
        "/drip" => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                .await;
            // One byte every 50 ms, until the client goes away.
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if stream.write_all(b"d").await.is_err() {
                    let _ = closed.send(());
                    return;
                }
            }
        }
        _ => reply("404 Not Found", "", b""),
    };
    let _ = stream.write_all(&answer).await;
}

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
    let request = JobRequest {
        capabilities,
        limits: Limits {
            timeout,
            ..Limits::default()
        },
        ..JobRequest::new(task, input.to_string(), JobInfo::adhoc("http-test"))
    };
    RUNTIME.run(&module(), request).await
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
    module();
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
