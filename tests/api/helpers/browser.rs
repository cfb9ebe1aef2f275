//! A real browser for the console's tests: Debian's headless Chromium,
//! driven over WebDriver (chromedriver) with fantoccini, and axe-core for
//! the accessibility check.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// How long a page or an element may take to appear.
const PATIENCE: Duration = Duration::from_secs(20);

/// Chromium under chromedriver, in a process group of its own so that
/// dropping it (a failed test included) ends the browser too.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn notice(what: &str) {
    // Past the test harness's capture, for CI to see.
    let _ = writeln!(std::io::stderr(), "notice: {what}");
}

fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Browser {
    /// A headless Chromium, or `None` (saying why, for CI to catch) when
    /// chromium or chromedriver is not installed.
    pub async fn start() -> Option<Browser> {
        if !installed("chromium") || !installed("chromedriver") {
            notice(
                "chromium or chromedriver is not installed (apt-get install chromium \
                 chromium-driver); the browser tests are skipped",
            );
            return None;
        }
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("chromedriver did not start a session: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Some(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Closes the browser.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The first element `xpath` finds, waiting for it.
    pub async fn find(&self, xpath: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::XPath(xpath))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => panic!(
                "{xpath}: {e}\non {}:\n{}",
                self.path().await,
                self.text().await
            ),
        }
    }

    /// The button (or link in the role of one) named `name`, waiting for it.
    pub async fn button(&self, name: &str) -> fantoccini::elements::Element {
        self.find(&format!(
            "//*[self::button or @role='button'][normalize-space(.)='{name}']"
        ))
        .await
    }

    /// Clicks the button named `name` within the element `scope` finds.
    pub async fn click_in(&self, scope: &str, name: &str) {
        self.find(&format!(
            "{scope}//*[self::button or @role='button'][normalize-space(.)='{name}']"
        ))
        .await
        .click()
        .await
        .unwrap();
    }

    pub async fn click(&self, name: &str) {
        self.button(name).await.click().await.unwrap();
    }

    /// Presses `key` on the keyboard, wherever the focus is.
    pub async fn press(&self, key: Key) {
        let key = char::from(key);
        let press = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client.perform_actions(press).await.unwrap();
    }

    /// Moves the focus with Tab, from wherever it is, until it is on the
    /// control whose text is `name`; panics after 40 presses.
    pub async fn tab_to(&self, name: &str) {
        for _ in 0..40 {
            self.press(Key::Tab).await;
            let focused = self
                .run("return document.activeElement ? document.activeElement.innerText || '' : ''")
                .await;
            if focused.as_str().is_some_and(|t| t.trim() == name) {
                return;
            }
        }
        panic!("Tab never reached {name:?} on {}", self.path().await);
    }

    /// Types `text` into the field labelled `label`.
    pub async fn fill(&self, label: &str, text: &str) {
        let field = self
            .find(&format!(
                "//*[@id=//label[normalize-space(.)='{label}']/@for]"
            ))
            .await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        match self
            .client
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
        {
            Ok(Value::String(text)) => text,
            other => format!("{other:?}"),
        }
    }

    /// Waits until the element `xpath` finds reads `expected` (a click's
    /// page may take a moment to replace the one before).
    pub async fn until(&self, xpath: &str, expected: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = match self.client.find(Locator::XPath(xpath)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if now == expected {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{xpath}: {now:?}, not {expected:?}, on {}:\n{}",
                    self.path().await,
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the main heading reads `expected`.
    pub async fn until_heading(&self, expected: &str) {
        self.until("//h1", expected).await;
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Runs `script` (a function body); its value.
    pub async fn run(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Runs `script` (a function body whose last argument is the callback
    /// to call with the result); the value it was called with.
    pub async fn run_async(&self, script: &str) -> Value {
        self.client.execute_async(script, vec![]).await.unwrap()
    }

    /// Grants the page the permission `name` (WebDriver's Set Permission).
    pub async fn grant(&self, name: &str) {
        self.client
            .issue_cmd(SetPermission(name.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("granting {name}: {e}"));
    }

    /// Saves the page as `name.png` in `CONSOLE_SCREENSHOTS`, when that
    /// names a directory (the docs' pictures are made so).
    pub async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("CONSOLE_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
        }
    }

    /// Renders pages as for a reader who prefers a dark (or light) scheme.
    pub async fn prefer_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.client
            .issue_cmd(Cdp(
                "Emulation.setEmulatedMedia",
                json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
            ))
            .await
            .unwrap();
    }

    /// Sets the viewport's width in CSS pixels (a phone's is 320).
    pub async fn viewport_width(&self, width: u32) {
        self.client
            .issue_cmd(Cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600 }),
            ))
            .await
            .unwrap();
    }

    /// Whether the page is wider than the viewport (scrolls sideways).
    pub async fn overflows(&self) -> bool {
        self.run("return document.documentElement.scrollWidth > window.innerWidth")
            .await
            .as_bool()
            .unwrap()
    }

    /// The page's background colour, as CSS computes it.
    pub async fn background(&self) -> String {
        self.run("return getComputedStyle(document.documentElement).backgroundColor")
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The serious and critical violations axe-core finds on the page, as
    /// (rule, what it says, where); `None` when axe-core is not installed.
    pub async fn accessibility_violations(&self) -> Option<Vec<String>> {
        let axe = axe_core()?;
        self.run(&axe).await;
        let found = self
            .run_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                    .then(r => done(r.violations
                        .filter(v => v.impact === 'serious' || v.impact === 'critical')
                        .map(v => v.id + ': ' + v.help + ' at ' +
                             v.nodes.map(n => n.target.join(' ')).join(', '))))
                    .catch(e => done(['axe failed: ' + e]));",
            )
            .await;
        Some(
            found
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect(),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share its process group.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// axe-core's script: `AXE_CORE_SCRIPT` (a path to `axe.min.js`), or
/// `None`, saying the check is skipped.
fn axe_core() -> Option<String> {
    let path = std::env::var_os("AXE_CORE_SCRIPT").map(PathBuf::from);
    match path.and_then(|p| std::fs::read_to_string(p).ok()) {
        Some(script) => Some(script),
        None => {
            notice(
                "AXE_CORE_SCRIPT does not name axe-core's axe.min.js (npm install axe-core@4); \
                 the accessibility check is skipped",
            );
            None
        }
    }
}

/// A Chrome DevTools Protocol command, through chromedriver.
#[derive(Debug)]
struct Cdp(&'static str, Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or("")
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.0, "params": self.1 });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// WebDriver's Set Permission command (W3C Permissions).
#[derive(Debug)]
struct SetPermission(String);

impl fantoccini::wd::WebDriverCompatibleCommand for SetPermission {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/permissions", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "descriptor": { "name": self.0 }, "state": "granted" });
        (http::Method::POST, Some(body.to_string()))
    }
}
