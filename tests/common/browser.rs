//! Headless Chromium driven over the DevTools protocol (a websocket to
//! `--remote-debugging-port`), for tests that click, type and take
//! screenshots: `--dump-dom` (as the Swagger UI test uses) cannot press a
//! button. Every wait has a deadline; the browser is killed when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Chromium without a screen, a sandbox (tests run as root in CI) or any
/// network of its own: what every browser test starts it with.
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// Longest a page may take to show what a test waits for.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    log: Arc<Mutex<String>>,
    /// Where [`Browser::screenshot`] writes.
    pub shots: PathBuf,
}

impl Browser {
    /// Starts `chromium` headless with its own profile under `profile`, a
    /// 1280×800 window, and screenshots going to `shots`.
    pub fn start(chromium: &Path, profile: &Path, shots: PathBuf) -> Browser {
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        let mut cmd = Command::new(chromium);
        cmd.args(HEADLESS)
            .args([
                "--hide-scrollbars",
                "--window-size=1280,800",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (mut child, log) = super::spawn_logged(cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        let browser_url = loop {
            let found = log
                .lock()
                .unwrap()
                .lines()
                .find_map(|l| l.split("DevTools listening on ").nth(1).map(str::to_owned));
            if let Some(url) = found {
                break url;
            }
            if Instant::now() >= deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium did not start its DevTools listener within 60 s:\n{}",
                    log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // ws://127.0.0.1:PORT/devtools/browser/ID → the page target's socket.
        let http_base = browser_url
            .trim()
            .replacen("ws://", "http://", 1)
            .split("/devtools/")
            .next()
            .unwrap()
            .to_owned();
        let targets: Value = ureq::get(&format!("{http_base}/json/list"))
            .call()
            .and_then(|mut r| r.body_mut().read_json())
            .unwrap_or_else(|e| panic!("DevTools target list: {e}"));
        let page_url = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {targets}"))
            .to_owned();
        let (socket, _) = tungstenite::connect(&page_url).unwrap_or_else(|e| panic!("DevTools socket: {e}"));
        if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
            tcp.set_read_timeout(Some(Duration::from_secs(60)))
                .expect("read timeout");
        }
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            log,
            shots,
        };
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser
    }

    /// Sends one DevTools command and returns its result (events in between are dropped).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(message))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        loop {
            let frame = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("{method}: no answer from chromium: {e}\n{}", self.log.lock().unwrap()));
            let Message::Text(text) = frame else { continue };
            let answer: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if answer["id"] == id {
                if let Some(error) = answer.get("error") {
                    panic!("{method}: {error}");
                }
                return answer["result"].clone();
            }
        }
    }

    /// Opens `url`.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The value of a JavaScript expression (a promise is awaited); a thrown
    /// exception fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy (errors while the page loads count
    /// as false); returns its value. Fails after [`PAGE_TIMEOUT`] saying `what`.
    pub fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        let guarded = format!("(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()");
        loop {
            let value = self.eval(&guarded);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self.eval("document.body ? document.body.innerText : ''");
                panic!("timed out after {PAGE_TIMEOUT:?} waiting for {what} ({expression}); the page says:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Chooses `file` in the file input `selector`, as a person does in the
    /// file dialog (which a headless browser does not show); the page gets
    /// its `change` event.
    pub fn choose_file(&mut self, selector: &str, file: &Path) {
        let found = self.call(
            "Runtime.evaluate",
            json!({"expression": format!("document.querySelector({selector:?})")}),
        );
        let object = found["result"]["objectId"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector} to choose a file in"))
            .to_owned();
        self.call(
            "DOM.setFileInputFiles",
            json!({"files": [file.display().to_string()], "objectId": object}),
        );
    }

    /// Presses a key (`Tab`, `Enter`, …) as the keyboard would.
    pub fn press(&mut self, key: &str) {
        let (code, text) = match key {
            "Tab" => (9, ""),
            "Enter" => (13, "\r"),
            other => panic!("no key code for {other}"),
        };
        let mut down = json!({"type": "keyDown", "key": key, "code": key, "windowsVirtualKeyCode": code});
        if !text.is_empty() {
            down["text"] = json!(text);
        }
        self.call("Input.dispatchKeyEvent", down);
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code}),
        );
    }

    /// Types `text` into the focused field.
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// Presses Tab until `expression` (about `document.activeElement`) holds;
    /// fails when it never does within `max` presses: not reachable by keyboard.
    pub fn tab_to(&mut self, expression: &str, max: usize) {
        for _ in 0..max {
            self.press("Tab");
            if self.eval(&format!(
                "!!(() => {{ const el = document.activeElement; return {expression}; }})()"
            )) == true
            {
                return;
            }
        }
        panic!("{expression} was not reached with {max} presses of Tab");
    }

    /// The viewport: `width`×`height` CSS pixels; `mobile` as a phone.
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// Saves a PNG of the viewport as `shots/NAME.png`, prints and returns its path.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
