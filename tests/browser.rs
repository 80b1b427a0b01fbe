//! The web client in headless Chromium, driven through chromedriver (WebDriver).
//!
//! ops and fin each get a browser of their own. ops sends, fin sees the notification arrive
//! without reloading and confirms it, and ops sees it confirmed. The tests also check that
//! content is shown as text, that the page switches language, and that batch confirmation and
//! mark-all-read reach the server. Screenshots go to target/browser-screenshots/.
//!
//! They need /usr/bin/chromium and /usr/bin/chromedriver (Debian's chromium and
//! chromium-driver packages, which .ci/run installs) and are skipped with a message without them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use herald_tests::{Backend, TEST_PASSWORD, TestApp};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a test waits for something to appear in a page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// A chromedriver process on a loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver, or returns `None` (printing why) when Chromium is not installed.
    async fn start() -> Option<Self> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(binary).exists() {
                eprintln!(
                    "skipped: {binary} is missing; install Debian's chromium and chromium-driver packages to run the browser tests"
                );
                return None;
            }
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(driver);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not listen on port {port} within 10 s");
    }

    /// Opens a new headless browser that prefers `language`.
    async fn browser(&self, language: &str) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--lang={language}"),
                ],
                "prefs": {"intl.accept_languages": language},
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("start a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

fn testid(id: &str) -> String {
    format!(r#"[data-testid="{id}"]"#)
}

/// Waits until `script` (the body of a function) returns true in the page.
async fn wait_until(browser: &Client, what: &str, script: &str) {
    let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
    loop {
        let value = browser.execute(script, vec![]).await.expect("run script");
        if value == Value::Bool(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PAGE_TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_in(browser: &Client, app: &TestApp, username: &str) {
    browser.goto(&app.url("/")).await.expect("open the page");
    let field = browser
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(&testid("login-username")))
        .await
        .expect("login form");
    field.send_keys(username).await.unwrap();
    browser
        .find(Locator::Css(&testid("login-password")))
        .await
        .unwrap()
        .send_keys(TEST_PASSWORD)
        .await
        .unwrap();
    browser
        .find(Locator::Css(&testid("login-submit")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        browser,
        "the socket to connect",
        r#"const s = document.querySelector('[data-testid="connection-state"]');
           return !!s && s.dataset.state === 'connected';"#,
    )
    .await;
}

/// Fills the send form and submits it.
async fn send(browser: &Client, content: &str, priority: &str) {
    let receiver = browser
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(&testid("send-receiver")))
        .await
        .expect("send form");
    receiver.select_by_value("finance").await.unwrap();
    browser
        .find(Locator::Css(&testid("send-priority")))
        .await
        .unwrap()
        .select_by_value(priority)
        .await
        .unwrap();
    // send_keys types character by character; set the value directly so that long and
    // non-ASCII content arrives intact, then fire `input` as typing would.
    browser
        .execute(
            r#"const area = document.querySelector('[data-testid="send-content"]');
               area.value = arguments[0];
               area.dispatchEvent(new Event('input', {bubbles: true}));"#,
            vec![json!(content)],
        )
        .await
        .unwrap();
    browser
        .find(Locator::Css(&testid("send-submit")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn item_selector(id: i64) -> String {
    format!(r#"[data-testid="notification-item"][data-notification-id="{id}"]"#)
}

/// Waits until the page lists a notification with this content and returns its id.
async fn wait_for_item(browser: &Client, content: &str) -> i64 {
    let script = r#"const items = [...document.querySelectorAll('[data-testid="notification-item"]')];
        const item = items.find(i => i.querySelector('[data-testid="notification-content"]')?.textContent === arguments[0]);
        return item ? Number(item.dataset.notificationId) : null;"#;
    let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
    loop {
        let value = browser
            .execute(script, vec![json!(content)])
            .await
            .expect("run script");
        if let Some(id) = value.as_i64() {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for a notification with content {content:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_of(browser: &Client, id: i64) -> Option<String> {
    browser
        .find(Locator::Css(&item_selector(id)))
        .await
        .ok()?
        .attr("data-status")
        .await
        .ok()?
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

async fn save_screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("take a screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("save screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_arrives_live_and_confirmation_returns() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("app");
    let ops = driver.browser("zh-CN").await;
    let fin = driver.browser("zh-CN").await;
    log_in(&ops, &app, "ops").await;
    log_in(&fin, &app, "fin").await;

    let content = "请核对 11 月对账单 🧾";
    send(&ops, content, "urgent").await;

    let id = wait_for_item(&fin, content).await;
    assert_eq!(status_of(&fin, id).await.as_deref(), Some("pending"));
    save_screenshot(&fin, "fin-receives-zh-CN").await;
    fin.find(Locator::Css(&format!(
        r#"{} [data-testid="confirm-button"]"#,
        item_selector(id)
    )))
    .await
    .expect("confirm button on the receiver's item")
    .click()
    .await
    .unwrap();

    wait_until(
        &ops,
        "the sender's item to show confirmed",
        &format!(
            r#"const item = document.querySelector('{}');
               return !!item && item.dataset.status === 'confirmed';"#,
            item_selector(id).replace('\'', "\\'")
        ),
    )
    .await;
    save_screenshot(&ops, "ops-sees-confirmation-zh-CN").await;
    let stored = app.get("ops", &format!("/api/notifications/{id}/")).await;
    assert_eq!(stored.body["status"], "confirmed");
    assert_eq!(stored.body["confirmed_by"], "fin");
    assert_eq!(stored.body["priority"], "urgent");

    ops.close().await.unwrap();
    fin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_content_shows_as_text() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("app");
    let fin = driver.browser("en-US").await;
    log_in(&fin, &app, "fin").await;
    fin.execute("window.__injected = false;", vec![])
        .await
        .unwrap();

    let content = r#"<script>window.__injected = true</script><img src=x onerror="window.__injected = true">"#;
    app.send("ops", content, "finance").await;

    let id = wait_for_item(&fin, content).await;
    let shown = fin
        .find(Locator::Css(&format!(
            r#"{} [data-testid="notification-content"]"#,
            item_selector(id)
        )))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, content);
    let injected = fin
        .execute(
            "return [window.__injected, document.querySelectorAll('main img[src=\"x\"], [data-testid=\"notification-item\"] img, [data-testid=\"notification-item\"] script').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        injected,
        json!([false, 0]),
        "no markup from content ran or rendered"
    );
    save_screenshot(&fin, "markup-as-text-en").await;

    fin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_follows_browser_language_and_switches() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("app");
    let chinese = driver.browser("zh-CN").await;
    let english = driver.browser("en-US").await;

    for (browser, expected) in [(&chinese, "zh-CN"), (&english, "en")] {
        browser.goto(&app.url("/")).await.unwrap();
        browser
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css(&testid("login-username")))
            .await
            .unwrap();
        let lang = browser
            .execute("return document.documentElement.lang;", vec![])
            .await
            .unwrap();
        assert_eq!(lang, json!(expected), "initial language");
    }
    save_screenshot(&chinese, "login-zh-CN").await;
    save_screenshot(&english, "login-en").await;

    log_in(&chinese, &app, "fin").await;
    let before = chinese
        .find(Locator::Css(&testid("mark-all-read")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    chinese
        .find(Locator::Css(&testid("language-switch")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &chinese,
        "the page to switch to English",
        "return document.documentElement.lang === 'en';",
    )
    .await;
    let after = chinese
        .find(Locator::Css(&testid("mark-all-read")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(before, after, "the button's label changed language");
    save_screenshot(&chinese, "switched-to-en").await;

    chinese.close().await.unwrap();
    english.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_confirm_and_mark_all_read() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("app");
    let first = app.send("ops", "第一条", "finance").await["id"]
        .as_i64()
        .unwrap();
    let second = app.send("ops", "第二条", "finance").await["id"]
        .as_i64()
        .unwrap();
    let third = app.send("ops", "第三条", "finance").await["id"]
        .as_i64()
        .unwrap();
    let fin = driver.browser("zh-CN").await;
    log_in(&fin, &app, "fin").await;
    wait_for_item(&fin, "第三条").await;
    wait_until(
        &fin,
        "the unread badge to count three",
        r#"return document.querySelector('[data-testid="unread-count"]').textContent.trim() === '3';"#,
    )
    .await;

    for id in [first, second] {
        fin.find(Locator::Css(&format!(
            r#"{} [data-testid="select-item"]"#,
            item_selector(id)
        )))
        .await
        .expect("checkbox on a pending item")
        .click()
        .await
        .unwrap();
    }
    fin.find(Locator::Css(&testid("batch-confirm")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    for id in [first, second] {
        wait_until(
            &fin,
            "the selected items to show confirmed",
            &format!(
                r#"const item = document.querySelector('{}');
                   return !!item && item.dataset.status === 'confirmed';"#,
                item_selector(id)
            ),
        )
        .await;
    }
    assert_eq!(status_of(&fin, third).await.as_deref(), Some("pending"));
    for id in [first, second] {
        let stored = app.get("fin", &format!("/api/notifications/{id}/")).await;
        assert_eq!(stored.body["confirmed_by"], "fin");
    }

    fin.find(Locator::Css(&testid("mark-all-read")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &fin,
        "the unread badge to reach zero",
        r#"return document.querySelector('[data-testid="unread-count"]').textContent.trim() === '0';"#,
    )
    .await;
    let count = app.get("fin", "/api/notifications/unread-count/").await;
    assert_eq!(count.body["count"], 0);
    save_screenshot(&fin, "batch-confirmed-zh-CN").await;

    fin.close().await.unwrap();
}
