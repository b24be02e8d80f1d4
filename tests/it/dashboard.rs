//! The dashboard in a real browser (Debian's chromium, headless, over WebDriver) against a
//! real server, worker and Redis: what an operator sees change without reloading, and what
//! the server refuses whatever the page shows.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use taskbox::api::ApiConfig;
use taskbox_core::auth::{Role, Tokens};
use taskbox_core::queue::Queue;
use taskbox_core::registry::{Registry, RegistryConfig};
use taskbox_core::worker::WorkerConfig;

use crate::support::browser::Browser;
use crate::support::private_redis::TestRedis;
use crate::support::{guests, host, private_redis, wait};

const ADMIN: &str = "dashboard-admin-token";

/// Long enough for a worker on a busy 2-core machine; the pages change within a second.
const LIMIT: Duration = Duration::from_secs(30);

struct Server {
    _redis: TestRedis,
    url: String,
    queue: Queue,
    http: reqwest::Client,
    _serving: host::Serving,
}

impl Server {
    /// The API, the dashboard and a worker on a fresh Redis, with the `hello` and
    /// `fixtures` guests published for the default tenant and tenant `other`.
    async fn start() -> Self {
        let (redis, queue) = private_redis::start().await;
        let registry = Registry::new(queue.clone(), host::runtime(), RegistryConfig::default());
        for tenant in ["default", "other"] {
            for guest in ["hello", "fixtures"] {
                host::publish(&registry, tenant, guest).await;
            }
        }
        let config = ApiConfig {
            admin_token: Some(ADMIN.into()),
            // One test enqueues 10,000 jobs at once.
            enqueue_burst: 20_000.0,
            ..ApiConfig::default()
        };
        let worker = WorkerConfig::new(format!("dashboard-test-{}", rand::random::<u32>()));
        let serving = host::serve(&queue, registry, config, worker).await;
        Self {
            _redis: redis,
            url: serving.url.clone(),
            queue,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _serving: serving,
        }
    }

    async fn token(&self, tenant: &str, role: Role) -> String {
        Tokens::new(self.queue.store().clone())
            .create(tenant, role)
            .await
            .unwrap()
    }

    /// Enqueues over `/v1` with `token`; returns the job id.
    async fn enqueue(&self, token: &str, body: Value) -> String {
        let reply: Value = self
            .http
            .post(format!("{}/v1/jobs", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{reply}"))
            .to_owned()
    }

    async fn job(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/jobs/{id}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A session cookie for `token`, logged in as a browser on this page would.
    async fn session(&self, token: &str) -> String {
        let response = self
            .http
            .post(format!("{}/ui/login", self.url))
            .header("origin", &self.url)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        cookie.split(';').next().unwrap().to_owned()
    }

    /// Posts to a dashboard action with a session cookie and an `Origin`.
    async fn post(&self, path: &str, cookie: &str, origin: &str) -> StatusCode {
        self.http
            .post(format!("{}{path}", self.url))
            .header("cookie", cookie)
            .header("origin", origin)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn page(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }
}

/// Saves a screenshot under `target/ui-screenshots/` for the docs.
async fn screenshot(browser: &Browser, name: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/ui-screenshots");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/{name}.png"), browser.screenshot().await).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueued_over_the_api_move_on_the_open_page_without_a_reload() {
    let server = Server::start().await;
    let browser = Browser::start().await;
    browser.log_in(&server.url, ADMIN).await;
    browser.open(&format!("{}/ui/jobs", server.url)).await;
    browser.wait_for_text("#live-state", "live", LIMIT).await;
    // Gone if the page reloads.
    browser
        .client
        .execute("window.stillTheSamePage = true;", vec![])
        .await
        .unwrap();

    let id = server
        .enqueue(
            ADMIN,
            json!({"module": "fixtures", "task": "sleep", "input": {"ms": 1500}}),
        )
        .await;
    let status = format!("tr[data-job='{id}'] .status");
    browser.wait_for_text(&status, "running", LIMIT).await;
    browser.wait_for_text(&status, "completed", LIMIT).await;
    let same: Value = browser
        .client
        .execute("return window.stillTheSamePage === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(true), "the page reloaded");

    browser.open(&format!("{}/ui", server.url)).await;
    // Counted in the last hour's chart and the last day's, and among the completed.
    for counted in ["#hour-completed", "#day-completed", "#state-completed"] {
        assert_eq!(browser.read(counted).await, "1", "{counted}");
    }
    screenshot(&browser, "overview").await;
    browser.open(&format!("{}/ui/jobs/{id}", server.url)).await;
    screenshot(&browser, "job").await;
    // The module's page counts the job under its task, with its time.
    browser
        .open(&format!("{}/ui/modules/fixtures", server.url))
        .await;
    let sleep = "table.tasks tr[data-task='sleep']";
    assert_eq!(browser.read(&format!("{sleep} td.completed")).await, "1");
    let row = browser.read(sleep).await;
    assert!(row.contains(" s"), "its 1.5 s shows as seconds: {row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_is_retried_from_the_dead_letters_and_the_audit_log_says_who() {
    let server = Server::start().await;
    let browser = Browser::start().await;
    browser.log_in(&server.url, ADMIN).await;
    browser.open(&format!("{}/ui/dead", server.url)).await;
    let id = server
        .enqueue(
            ADMIN,
            json!({"module": "fixtures", "task": "panic", "max_retries": 0}),
        )
        .await;
    let row = format!("tr[data-job='{id}']");
    wait::until("the dead job appears on the open page", LIMIT, || async {
        (browser.count(&row).await == 1).then_some(())
    })
    .await;
    let error = browser.read(&format!("{row} .error")).await;
    assert!(error.contains("trap"), "{error}");
    // Why it died is on its page: the trap and the guest's own words in its log.
    browser.click(&format!("{row} a")).await;
    wait::until("the job's page shows its log", LIMIT, || async {
        let log = browser.text("pre.log").await?;
        log.contains("this task always panics").then_some(())
    })
    .await;
    browser.open(&format!("{}/ui/dead", server.url)).await;

    browser.click(&format!("{row} button.retry")).await;
    // The job runs again, and dies again: a second series of attempts.
    wait::until("the retried job runs its second series", LIMIT, || async {
        let job = server.job(&id).await;
        (job["dead_retries"] == 1 && job["status"] == "dead").then_some(())
    })
    .await;
    browser.open(&format!("{}/ui/audit", server.url)).await;
    let entry = browser.read("table.audit tbody tr").await;
    assert!(
        entry.contains("job.retry") && entry.contains(&id),
        "{entry}"
    );
    assert!(entry.contains("admin"), "{entry}");

    // The tenant's failure events, newest first: it died again after it was retried.
    browser.open(&format!("{}/ui/events", server.url)).await;
    wait::until(
        "the events page shows the job's failures",
        LIMIT,
        || async {
            let names = browser
                .client
                .find_all(fantoccini::Locator::Css("td.event"))
                .await
                .ok()?;
            let mut seen = Vec::new();
            for name in names {
                seen.push(name.text().await.ok()?);
            }
            (seen == ["job.failed", "job.retried", "job.failed"]).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_a_spinning_jobs_page_ends_it_and_the_page_shows_its_fuel() {
    let server = Server::start().await;
    let browser = Browser::start().await;
    browser.log_in(&server.url, ADMIN).await;
    let id = server
        .enqueue(ADMIN, json!({"module": "fixtures", "task": "spin"}))
        .await;
    // The workers page lists it while it runs, with the worker running it.
    browser.open(&format!("{}/ui/workers", server.url)).await;
    wait::until("the spinning job is listed as running", LIMIT, || async {
        let row = browser
            .text(&format!("table.running tr[data-job='{id}']"))
            .await?;
        row.contains("dashboard-test-").then_some(())
    })
    .await;
    browser.open(&format!("{}/ui/jobs/{id}", server.url)).await;
    browser.wait_for_text("#job-status", "running", LIMIT).await;
    browser.click("button.cancel").await;
    browser
        .wait_for_text("#job-status", "cancelled", LIMIT)
        .await;
    let fuel: u64 = browser.read("#fuel").await.parse().unwrap();
    assert!(fuel > 0);
    // The attempt's row in the timeline: cancelled, with the same fuel.
    let attempt = browser.read("table.attempts tbody tr").await;
    assert!(attempt.contains("cancelled"), "{attempt}");
    assert_eq!(
        browser.read("table.attempts td.fuel").await,
        fuel.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_what_a_role_a_site_or_a_tenant_may_not_do() {
    let server = Server::start().await;
    let dead = server
        .enqueue(
            ADMIN,
            json!({"module": "fixtures", "task": "panic", "max_retries": 0}),
        )
        .await;
    wait::until("the job dies", LIMIT, || async {
        (server.job(&dead).await["status"] == "dead").then_some(())
    })
    .await;
    let retry = format!("/ui/jobs/{dead}/retry");

    // A viewer sees no action and may take none, whatever it posts.
    let viewer = server
        .session(&server.token("default", Role::Viewer).await)
        .await;
    let (status, page) = server.page(&format!("/ui/jobs/{dead}"), &viewer).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("panic") && !page.contains("<button type=\"submit\" class=\"retry\""));
    assert_eq!(
        server.post(&retry, &viewer, &server.url).await,
        StatusCode::FORBIDDEN
    );
    let browser = Browser::start().await;
    browser
        .log_in(&server.url, &server.token("default", Role::Viewer).await)
        .await;
    browser.open(&format!("{}/ui/dead", server.url)).await;
    assert_eq!(browser.count("tr[data-job] button").await, 0);

    // An admin's session, from another site, may not either.
    let admin = server.session(ADMIN).await;
    assert_eq!(
        server.post(&retry, &admin, "http://evil.example").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(server.job(&dead).await["status"], "dead");
    // Nor without a session.
    assert_eq!(
        server.post(&retry, "", &server.url).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.post(&retry, &admin, &server.url).await,
        StatusCode::SEE_OTHER
    );

    // Another tenant's job is not there.
    let others = server
        .enqueue(
            &server.token("other", Role::Operator).await,
            json!({"module": "hello", "task": "greet", "input": {"name": "B"}}),
        )
        .await;
    let (status, _) = server.page(&format!("/ui/jobs/{others}"), &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let other = server
        .session(&server.token("other", Role::Admin).await)
        .await;
    let (status, _) = server.page(&format!("/ui/jobs/{dead}"), &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_paused_on_its_page_ages_starts_nothing_and_drains_when_resumed() {
    let server = Server::start().await;
    let browser = Browser::start().await;
    browser.log_in(&server.url, ADMIN).await;
    let first = server
        .enqueue(
            ADMIN,
            json!({"module": "hello", "task": "greet", "input": {"name": "A"}}),
        )
        .await;
    wait::until("the first job completes", LIMIT, || async {
        (server.job(&first).await["status"] == "completed").then_some(())
    })
    .await;
    browser.open(&format!("{}/ui/queues", server.url)).await;
    let row = "tr[data-queue='default']";
    browser.click(&format!("{row} button.pause")).await;
    browser
        .wait_for_text(&format!("{row} .state .status"), "paused", LIMIT)
        .await;

    let ids = [
        server
            .enqueue(
                ADMIN,
                json!({"module": "hello", "task": "greet", "input": {"name": "B"}}),
            )
            .await,
        server
            .enqueue(
                ADMIN,
                json!({"module": "hello", "task": "greet", "input": {"name": "C"}}),
            )
            .await,
    ];
    // The oldest waiting age grows on the open page, past the time a worker trusts what it
    // read of the paused queues, and nothing starts.
    wait::until("the paused queue's age reaches 2 s", LIMIT, || async {
        let oldest = browser.text(&format!("{row} .oldest")).await?;
        let seconds: u64 = oldest.strip_suffix(" s")?.parse().ok()?;
        (seconds >= 2).then_some(())
    })
    .await;
    for id in &ids {
        assert_eq!(server.job(id).await["status"], "pending");
    }

    browser.click(&format!("{row} button.resume")).await;
    browser
        .wait_for_text(&format!("{row} .state .status"), "running", LIMIT)
        .await;
    for id in &ids {
        wait::until("the queue drains", LIMIT, || async {
            (server.job(id).await["status"] == "completed").then_some(())
        })
        .await;
    }
    browser
        .wait_for_text(&format!("{row} .waiting"), "0", LIMIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_all_matching_retries_exactly_the_matching_jobs_of_ten_thousand() {
    let server = Server::start().await;
    let fail = |i: usize| {
        json!({"module": "fixtures", "task": "fail", "max_retries": 0,
               "input": {"kind": "fatal", "message": format!("m{}", i % 10)}})
    };
    for batch in 0..10 {
        let jobs: Vec<Value> = (batch * 1000..(batch + 1) * 1000).map(fail).collect();
        let response = server
            .http
            .post(format!("{}/v1/jobs/batch", server.url))
            .bearer_auth(ADMIN)
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let dead = || async {
        let reply: Value = server
            .http
            .get(format!("{}/v1/jobs/count?status=dead", server.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["count"].as_u64().unwrap()
    };
    wait::until("10,000 jobs die", Duration::from_secs(180), || async {
        (dead().await == 10_000).then_some(())
    })
    .await;

    // The search, as the page sends it; what it costs is measured, not asserted (a busy
    // 2-core machine must not fail it): see docs/dashboard.md.
    let cookie = server.session(ADMIN).await;
    let search = "/ui/jobs?status=dead&q=message%3Dm3";
    let began = std::time::Instant::now();
    let (status, page) = server.page(search, &cookie).await;
    eprintln!(
        "a filtered search among 10,000 jobs answered in {:?}",
        began.elapsed()
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page.matches("<tr data-job=").count(),
        50,
        "a full first page"
    );

    let browser = Browser::start().await;
    browser.log_in(&server.url, ADMIN).await;
    browser.open(&format!("{}{search}", server.url)).await;
    browser.click("a.bulk-retry").await;
    wait::until("the preview counts the matching jobs", LIMIT, || async {
        let count = browser.text("#bulk-count strong").await?;
        (count == "1000").then_some(())
    })
    .await;
    // Jobs that match but arrive after the preview are left alone.
    let late: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(server.enqueue(ADMIN, fail(3)).await);
        }
        ids
    };
    wait::until("the late jobs die", LIMIT, || async {
        (dead().await == 10_005).then_some(())
    })
    .await;
    browser.click("button.confirm").await;
    browser
        .wait_for_text("#bulk-state", "done", Duration::from_secs(120))
        .await;
    browser.wait_for_text("#bulk-matched", "1000", LIMIT).await;
    browser.wait_for_text("#bulk-acted", "1000", LIMIT).await;
    for id in &late {
        assert_eq!(
            server.job(id).await["dead_retries"],
            0,
            "a late job was retried"
        );
    }
    // Exactly the matching jobs were retried.
    let mut retried = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/jobs?limit=500", server.url);
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = server
            .http
            .get(url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for job in page["jobs"].as_array().unwrap() {
            if job["dead_retries"] == 1 {
                retried += 1;
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(retried, 1000);
    browser.open(&format!("{}/ui/audit", server.url)).await;
    let entry = browser.read("table.audit tbody tr").await;
    assert!(
        entry.contains("jobs.retry") && entry.contains("message=m3"),
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_opens_one_after_another() {
    let server = Server::start().await;
    let browser = Browser::start().await;
    browser.log_in(&server.url, ADMIN).await;
    // Twice round: a browser opens at most six connections to a server, and the pages left
    // behind must not keep theirs (they once did, from the back-forward cache, and the
    // seventh page waited a minute).
    let pages = [
        ("/ui", "Overview"),
        ("/ui/jobs", "Jobs"),
        ("/ui/dead", "Dead letters"),
        ("/ui/queues", "Queues"),
        ("/ui/workers", "Workers"),
        ("/ui/modules", "Modules"),
        ("/ui/modules/hello", "Module hello"),
        ("/ui/schedules", "Schedules"),
        ("/ui/events", "Events"),
        ("/ui/audit", "Audit log"),
    ];
    for (path, title) in pages.iter().chain(&pages) {
        browser.open(&format!("{}{path}", server.url)).await;
        browser.wait_for_text("h1", title, LIMIT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_on_the_schedules_page_runs_the_schedules_job_at_once() {
    let server = Server::start().await;
    let created = server
        .http
        .post(format!("{}/v1/schedules", server.url))
        .bearer_auth(ADMIN)
        .json(&json!({
            "name": "new-year",
            "cron": "0 0 1 1 *",
            "module": "hello",
            "task": "greet",
            "input": {"name": "Ada"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let browser = Browser::start().await;
    browser.log_in(&server.url, ADMIN).await;
    browser.open(&format!("{}/ui/schedules", server.url)).await;
    browser
        .click("tr[data-schedule='new-year'] button.run-now")
        .await;
    // The browser lands on the new job's page, which follows it to its end.
    browser
        .wait_for_text("#job-status", "completed", LIMIT)
        .await;
    let id = browser.read("h1 code").await;
    let job = server.job(&id).await;
    assert_eq!(job["metadata"]["schedule"], "new-year", "{job}");
    assert_eq!(job["metadata"]["run_now"], true, "{job}");
    assert_eq!(job["result"]["message"], "Hello, Ada!", "{job}");
    browser.open(&format!("{}/ui/audit", server.url)).await;
    let entry = browser.read("table.audit tbody tr").await;
    assert!(
        entry.contains("schedule.run_now") && entry.contains("new-year"),
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_uploaded_with_the_form_is_published_and_a_viewer_may_not_upload() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("taskbox.toml");
    let text =
        host::manifest_text("hello").replacen("version = \"0.1.0\"", "version = \"0.9.0\"", 1);
    assert!(
        text.contains("0.9.0"),
        "the manifest names its version: {text}"
    );
    std::fs::write(&manifest, text).unwrap();
    let component = guests::wasm("hello").canonicalize().unwrap();

    let browser = Browser::start().await;
    browser.log_in(&server.url, ADMIN).await;
    browser.open(&format!("{}/ui/modules", server.url)).await;
    for (field, path) in [("manifest", &manifest), ("component", &component)] {
        browser
            .client
            .find(fantoccini::Locator::Css(&format!("input[name='{field}']")))
            .await
            .unwrap()
            .send_keys(path.to_str().unwrap())
            .await
            .unwrap();
    }
    browser.click("form.upload button").await;
    browser.wait_for_text("h1", "Module hello", LIMIT).await;
    let versions = browser.read("main").await;
    assert!(versions.contains("hello@0.9.0"), "{versions}");
    browser.open(&format!("{}/ui/audit", server.url)).await;
    let entry = browser.read("table.audit tbody tr").await;
    assert!(
        entry.contains("module.upload") && entry.contains("hello@0.9.0"),
        "{entry}"
    );

    // A viewer sees no form, and its upload is refused by the server.
    let viewer = server.token("default", Role::Viewer).await;
    let cookie = server.session(&viewer).await;
    let (_, page) = server.page("/ui/modules", &cookie).await;
    assert!(!page.contains("form method=\"post\" action=\"/ui/modules\""));
    let form = reqwest::multipart::Form::new()
        .text("manifest", host::manifest_text("hello"))
        .part(
            "component",
            reqwest::multipart::Part::bytes(std::fs::read(&component).unwrap()),
        );
    let refused = server
        .http
        .post(format!("{}/ui/modules", server.url))
        .header("cookie", &cookie)
        .header("origin", &server.url)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}
