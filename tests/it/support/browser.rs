//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven over
//! WebDriver by its `chromedriver` on a free port. The driver (and with it the browser) is
//! killed on drop.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{free_port, wait};

/// Where Debian puts them (`apt-get install chromium chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless chromium session.
    pub async fn start() -> Self {
        let port = free_port();
        // A process group of its own, so that the browsers it starts die with it.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("starting {CHROMEDRIVER} ({err}): apt-get install chromium chromium-driver")
            });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = wait::until("chromedriver answers", Duration::from_secs(30), || {
            let capabilities = capabilities.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        // A page that does not load within this fails its test, rather than stall it.
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                None,
                Some(Duration::from_secs(30)),
                None,
            ))
            .await
            .unwrap();
        Self { client, driver }
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The text of the first element `css` selects, or `None` when there is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// The text of the first element `css` selects, once there is one: the page's live
    /// part may be in the middle of a swap.
    pub async fn read(&self, css: &str) -> String {
        wait::until(
            format!("`{css}` is on the page"),
            Duration::from_secs(10),
            || self.text(css),
        )
        .await
    }

    /// Waits until the first element `css` selects reads `expected`.
    pub async fn wait_for_text(&self, css: &str, expected: &str, limit: Duration) {
        wait::until(format!("`{css}` reads `{expected}`"), limit, || async {
            (self.text(css).await.as_deref() == Some(expected)).then_some(())
        })
        .await;
    }

    /// Clicks the first element `css` selects; again if the live part was swapped between
    /// finding and clicking it.
    pub async fn click(&self, css: &str) {
        wait::until(
            format!("`{css}` is clicked"),
            Duration::from_secs(10),
            || async {
                let element = self.client.find(Locator::Css(css)).await.ok()?;
                element.click().await.ok()
            },
        )
        .await;
    }

    /// How many elements `css` selects.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |found| found.len())
    }

    /// Logs in to the dashboard at `base` with `token`.
    pub async fn log_in(&self, base: &str, token: &str) {
        self.open(&format!("{base}/ui/login")).await;
        self.client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        self.click("button[type=submit]").await;
        wait::until(
            "the login lands on the overview",
            Duration::from_secs(10),
            || async { (self.text("h1").await.as_deref() == Some("Overview")).then_some(()) },
        )
        .await;
    }

    /// A PNG of the page as it is now.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) with the negated id of a process group this test started.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
