//! A real browser for the status page: Debian's headless Chromium driven through ChromeDriver's
//! WebDriver protocol (plain HTTP and JSON). `.ci/run` installs both (`chromium`,
//! `chromium-driver`); the tests fail, naming the package, when they are missing.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A ChromeDriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium `width`×`height` pixels large.
    pub async fn start(width: u32, height: u32) -> Self {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install Debian's {package} package (.ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut b = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http,
        };
        for _ in 0..100 {
            if b.http.get(format!("{}/status", b.base)).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // Root in CI: no sandbox; no GPU in a container.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}"), "--hide-scrollbars"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = b.post("/session", caps).await;
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_string();
        b.base = format!("{}/session/{id}", b.base);
        b
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        v["value"].clone()
    }

    /// Loads `url` and waits for the page to be complete.
    pub async fn open(&self, url: &str) {
        let r = self.post("/url", json!({ "url": url })).await;
        assert!(r.is_null(), "navigation to {url} failed: {r}");
    }

    /// Runs `script` (a function body that `return`s) in the page; its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// The console messages logged so far (each with its level).
    pub async fn console(&self) -> Vec<(String, String)> {
        let v = self.post("/se/log", json!({ "type": "browser" })).await;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// A screenshot of the window, saved as PNG at `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let r = self.http.get(format!("{}/screenshot", self.base)).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Resizes the window (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height })).await;
    }
}

impl Browser {
    /// Ends the session (and its Chromium), then the driver.
    pub async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed before `close`: end the session with a plain request (no runtime in
        // `drop`), so that its Chromium does not outlive the driver.
        if let Some(path) = self.base.strip_prefix("http://").and_then(|r| r.split_once('/')) {
            if let Ok(mut s) = std::net::TcpStream::connect(path.0) {
                use std::io::{Read as _, Write as _};
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(s, "DELETE /{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", path.1, path.0);
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where tests leave files for people to look at (screenshots): `target/test-artefacts`.
pub fn artefacts() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts")
}
