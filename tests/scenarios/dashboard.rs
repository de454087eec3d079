//! The dashboard in a real headless Chromium, driven through chromedriver's W3C WebDriver HTTP
//! API: chats submitted through the API appear waiting in their lane on the page and complete
//! (the page's done count grows, without a reload), and the Retry button of a dead-lettered chat
//! makes a new job that completes. Chats are answered by a fake OpenAI-compatible provider in this
//! test: slow, so they wait in their lane, and refusing the first request of a "fail-once" chat
//! with HTTP 400, a permanent failure that dead-letters it, so its retry can succeed.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`):
//! fails, never skips, when they are missing. Leaves a screenshot at `target/dashboard.png`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use laneway_tests::{LanewayProcess, free_loopback_addr, poll_until, student_chat};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the fake provider takes to answer a chat: long enough for the page (polling every
/// second) to see the chats behind it waiting in their lane.
const REPLY_DELAY: Duration = Duration::from_millis(2500);
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn require_browser() {
    for binary in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(binary).is_file(),
            "{binary} is missing: the dashboard test drives Debian's Chromium through chromedriver. \
             Install them with `sudo apt-get install -y chromium chromium-driver` (.ci/run does)."
        );
    }
}

/// A fake OpenAI-compatible provider on a loopback port: answers `POST /v1/chat/completions`
/// after [`REPLY_DELAY`], except the first request mentioning "fail-once", refused with 400.
async fn fake_provider() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake provider");
    let addr = listener.local_addr().expect("fake provider address");
    let refused = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let refused = refused.clone();
            tokio::spawn(async move {
                let Some(body) = read_request_body(&mut socket).await else { return };
                let (status, answer) = if body.contains("fail-once") && !refused.swap(true, Ordering::SeqCst)
                {
                    ("400 Bad Request", json!({"error": {"message": "fake provider refuses this once"}}))
                } else {
                    tokio::time::sleep(REPLY_DELAY).await;
                    let reply =
                        json!({"choices": [{"message": {"role": "assistant", "content": "fake reply"}}]});
                    ("200 OK", reply)
                };
                let text = answer.to_string();
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

/// The body of one HTTP/1.1 request with a `content-length`.
async fn read_request_body(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return Some(String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned());
            }
        }
    }
}

/// A chromedriver process on a free loopback port, killed when dropped.
#[derive(Debug)]
struct ChromeDriver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl ChromeDriver {
    async fn start(dir: &Path) -> Self {
        let addr = free_loopback_addr();
        let log = dir.join("chromedriver.log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let driver = Self { child, url: format!("http://{addr}"), log };
        let client = reqwest::Client::new();
        let status = format!("{}/status", driver.url);
        poll_until(PATIENCE, || async {
            let answer = client.get(&status).send().await.ok()?.json::<Value>().await.ok()?;
            (answer["value"]["ready"] == true).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("chromedriver never became ready\n{}", driver.log_tail()));
        driver
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session in headless Chromium.
#[derive(Debug)]
struct Browser {
    client: reqwest::Client,
    session: String,
}

impl Browser {
    async fn open(driver: &ChromeDriver, profile: &Path) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1400,1000".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let answer = client
            .post(format!("{}/session", driver.url))
            .json(&capabilities)
            .send()
            .await
            .expect("POST /session");
        let body: Value = answer.json().await.expect("session answer");
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {body}\n{}", driver.log_tail()))
            .to_owned();
        Self { client, session: format!("{}/session/{session}", driver.url) }
    }

    /// A WebDriver command: its `value`, or the WebDriver error.
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let ok = answer.status().is_success();
        let body: Value = answer.json().await.map_err(|e| format!("{method} {path}: {e}"))?;
        if ok { Ok(body["value"].clone()) } else { Err(format!("{method} {path}: {body}")) }
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await.expect("navigate");
    }

    /// Runs `script` (a function body) in the page and answers what it returns.
    async fn eval(&self, script: &str) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []})))
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Finds the element matching `css` and clicks it (a real click); `Err` when there is none
    /// or the page replaced it in between (the caller polls again).
    async fn click(&self, css: &str) -> Result<(), String> {
        let found = self
            .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await?;
        let id = found[ELEMENT_KEY].as_str().ok_or_else(|| format!("no element id in {found}"))?.to_owned();
        self.command(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await.map(drop)
    }

    /// The visible text of the element matching `css`.
    async fn text(&self, css: &str) -> Result<String, String> {
        let found = self
            .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await?;
        let id = found[ELEMENT_KEY].as_str().ok_or_else(|| format!("no element id in {found}"))?.to_owned();
        let text = self.command(reqwest::Method::GET, &format!("/element/{id}/text"), None).await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    async fn screenshot(&self) -> Vec<u8> {
        let value = self.command(reqwest::Method::GET, "/screenshot", None).await.expect("screenshot");
        decode_base64(value.as_str().expect("base64 screenshot"))
    }

    async fn close(self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' => 62,
        b'/' => 63,
        other => panic!("not base64: {other}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let bits = group.iter().enumerate().fold(0u32, |acc, (i, c)| acc | value(*c) << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    out
}

/// Where the screenshot goes: the target directory this test runs from.
fn screenshot_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/scenarios-<hash>
    let target = exe.ancestors().nth(3).expect("target directory").to_path_buf();
    target.join("dashboard.png")
}

/// The page's done count for chats (0 before the first chat).
const CHAT_DONE: &str = r#"const c = document.querySelector('#queues tr[data-kind="chat"] td[data-state="done"]');
    return c ? Number(c.textContent) : 0;"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_jobs_waiting_and_completing_and_retries_a_dead_letter_in_chromium() {
    require_browser();
    let dir = tempfile::tempdir().expect("temp dir");
    let provider = fake_provider().await;
    let server = LanewayProcess::start(
        &dir.path().join("data"),
        &[
            ("LANEWAY_TENANTS", "t1"),
            ("LLM_BASE_URL", provider.as_str()),
            ("LLM_TIMEOUT_SEC", "30"),
            ("CHAT_LANE_DEBOUNCE_MS", "0"),
        ],
    )
    .await;
    let driver = ChromeDriver::start(dir.path()).await;
    let browser = Browser::open(&driver, &dir.path().join("chromium-profile")).await;
    // Under a tenant prefix, so the page's relative URLs are what is tested.
    browser.goto(&format!("{}/t/t1/", server.base_url())).await;
    poll_until(PATIENCE, || async {
        let live = browser.eval("return document.getElementById('status').dataset.state;").await;
        let tenant = browser.text("#tenant").await.ok()?;
        (live == "ok" && tenant == "t1").then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the dashboard never went live for t1\n{}", server.context()));

    assert_eq!(browser.eval(CHAT_DONE).await, 0);

    // A chat the provider refuses (HTTP 400, permanent) is dead-lettered and listed with Retry.
    let (status, started) =
        server.post_json("/t/t1/chat/start", &student_chat("dash-dead", "s2", "fail-once")).await;
    assert_eq!(status, 200, "{started}");
    let dead_id = started["job_id"].as_str().expect("job_id").to_owned();
    let retry_button = format!("button[data-retry=\"{dead_id}\"]");
    poll_until(PATIENCE, || async {
        browser.text(&format!("#dead tr[data-job-id=\"{dead_id}\"]")).await.ok()
    })
    .await
    .unwrap_or_else(|| panic!("the dead letter {dead_id} never appeared on the page\n{}", server.context()));
    // Click Retry (the page re-renders every second: a click on a replaced button is tried again;
    // a repeated retry answers the same new job).
    poll_until(PATIENCE, || async { browser.click(&retry_button).await.ok() })
        .await
        .unwrap_or_else(|| panic!("cannot click {retry_button}"));
    let retry_result = format!("#retry-result [data-retry-of=\"{dead_id}\"]");
    let new_id = poll_until(PATIENCE, || async {
        let found = browser
            .eval(&format!(
                "const e = document.querySelector('{}'); return e ? e.dataset.newJobId : null;",
                retry_result.replace('\'', "\\'")
            ))
            .await;
        found.as_str().map(ToOwned::to_owned)
    })
    .await
    .unwrap_or_else(|| panic!("clicking Retry showed no new job\n{}", server.context()));
    assert_ne!(new_id, dead_id);
    // The retried chat runs again, the provider answers it this time, and the page says so.
    poll_until(PATIENCE, || async {
        let state = browser
            .eval(&format!(
                "const e = document.querySelector('{}'); return e ? e.dataset.status : null;",
                retry_result.replace('\'', "\\'")
            ))
            .await;
        (state == "done").then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the retried job {new_id} never showed done\n{}", server.context()));
    let (_, record) = server.get(&format!("/t/t1/jobs/{new_id}")).await;
    assert_eq!(record["status"], "done", "{record}");
    assert_eq!(record["result"]["reply"], "fake reply", "{record}");
    poll_until(PATIENCE, || async { (browser.eval(CHAT_DONE).await == 1).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("the retried chat never counted as done on the page"));

    // Three chats in one lane: the page shows the two behind the first waiting, then all done.
    let mut ids = Vec::new();
    for n in 1..=3 {
        let body = student_chat(&format!("dash-{n}"), "s1", &format!("question {n}"));
        let (status, started) = server.post_json("/t/t1/chat/start", &body).await;
        assert_eq!(status, 200, "{started}");
        ids.push(started["job_id"].as_str().expect("job_id").to_owned());
    }
    let mut seen_waiting = std::collections::BTreeSet::new();
    let mut shot = None;
    let deadline = std::time::Instant::now() + PATIENCE;
    while !(seen_waiting.contains(&ids[1]) && seen_waiting.contains(&ids[2])) {
        assert!(
            std::time::Instant::now() < deadline,
            "the page never showed {:?} waiting (saw {seen_waiting:?})\n{}",
            &ids[1..],
            server.context()
        );
        let waiting = browser
            .eval(
                "return Array.from(document.querySelectorAll(\
                 '[data-lane-id=\"student:s1:main\"] [data-role=\"waiting\"]')).map(e => e.dataset.jobId);",
            )
            .await;
        let waiting: Vec<String> = serde_json::from_value(waiting).unwrap_or_default();
        if waiting.len() == 2 && shot.is_none() {
            // A picture of the page with a busy lane, the dead letter and its retry.
            shot = Some(browser.screenshot().await);
        }
        seen_waiting.extend(waiting);
        tokio::time::sleep(laneway_tests::POLL_INTERVAL).await;
    }
    poll_until(PATIENCE, || async { (browser.eval(CHAT_DONE).await == 4).then_some(()) })
        .await
        .unwrap_or_else(|| panic!("the page's chat done count never reached 4\n{}", server.context()));
    for id in &ids {
        let (_, record) = server.get(&format!("/t/t1/jobs/{id}")).await;
        assert_eq!(record["status"], "done", "{record}");
    }

    let png = match shot {
        Some(png) => png,
        None => browser.screenshot().await,
    };
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    let path = screenshot_path();
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    browser.close().await;
}
