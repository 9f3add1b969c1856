//! A small Chrome DevTools Protocol driver for headless Chromium, enough to walk a login the way
//! a user does: navigate, type into a field, click a button (real mouse events, so the form is
//! submitted by the browser with its cookies, Origin and redirects), and read the page.
//!
//! Every wait is polled against a deadline, never slept for a fixed time, so a slow machine
//! passes and a stuck browser fails with what it last showed instead of hanging CI. The browser
//! runs in its own process group, killed when the driver is dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{get, h1_client, send, temp_dir};

/// The longest any single step (a launch, a navigation, a protocol call) may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How much of Chromium's stderr is kept for failure messages.
const STDERR_KEPT: usize = 16 * 1024;

/// The Chromium binary on this machine, if any.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// What a page shows at one moment.
#[derive(Debug, Clone)]
pub struct PageState {
    pub href: String,
    /// `document.readyState`.
    pub ready: String,
    /// The HTTP status of the navigation that produced the document (0 for `about:blank` and
    /// error pages).
    pub status: u64,
    /// `document.body.innerText`.
    pub text: String,
    /// The text of the first `<pre>`: where Chromium renders a JSON or plain-text response.
    pub pre: Option<String>,
    /// Still the document that was showing when the last navigation or click began.
    pub stale: bool,
}

impl PageState {
    /// The echo upstream's answer shown on the page.
    pub fn echo(&self) -> Value {
        let text = self.pre.as_deref().unwrap_or(&self.text);
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("the page is not the echo's JSON ({e}): {self:?}"))
    }

    /// The values of header `name` the echo upstream received.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.echo()["headers"][name]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A headless Chromium with one page, driven over the DevTools WebSocket.
pub struct Chromium {
    child: tokio::process::Child,
    profile: PathBuf,
    stderr: Arc<Mutex<String>>,
    page: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Chromium {
    /// Starts `binary` with a fresh profile and connects to its first page.
    pub async fn launch(binary: &str) -> Chromium {
        let profile = temp_dir("chromium-cdp");
        let mut command = tokio::process::Command::new(binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--password-store=basic",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own group, so the renderer and utility processes die with it.
            .process_group(0);
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pipe = child.stderr.take().unwrap();
        let kept = stderr.clone();
        // Drained to the end, or Chromium would block on a full pipe.
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() < STDERR_KEPT {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
        });
        let browser_url = match tokio::time::timeout(DEADLINE, rx).await {
            Ok(Ok(url)) => url,
            _ => panic!(
                "chromium never announced its DevTools endpoint; stderr:\n{}",
                stderr.lock().unwrap()
            ),
        };
        // ws://127.0.0.1:<port>/devtools/browser/<id>
        let authority = browser_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {browser_url}"))
            .to_string();
        let page_url = page_websocket(&authority).await;
        let (page, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(&page_url))
            .await
            .expect("DevTools WebSocket connect timed out")
            .expect("DevTools WebSocket connect failed");
        Chromium {
            child,
            profile,
            stderr,
            page,
            next_id: 0,
        }
    }

    /// Sends one DevTools command to the page and returns its result (events are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.page
            .send(Message::Text(message.into()))
            .await
            .map_err(|e| format!("{method}: send: {e}"))?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.page.next())
                .await
                .map_err(|_| format!("{method}: no answer within {DEADLINE:?}"))?;
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{method}: {e}")),
                None => return Err(format!("{method}: the DevTools connection closed")),
            };
            let reply: Value =
                serde_json::from_str(&text).map_err(|e| format!("{method}: {e}: {text}"))?;
            if reply["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("{method}: {error}"));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// What the page shows now; `Err` while no document can answer (mid-navigation).
    pub async fn state(&mut self) -> Result<PageState, String> {
        let value = self
            .eval(
                "(() => {
                    const nav = performance.getEntriesByType('navigation')[0];
                    const pre = document.querySelector('pre');
                    return {
                        href: location.href,
                        ready: document.readyState,
                        status: nav && nav.responseStatus ? nav.responseStatus : 0,
                        text: document.body ? document.body.innerText : '',
                        pre: pre ? pre.textContent : null,
                        stale: window.__cdpStale === true,
                    };
                })()",
            )
            .await?;
        Ok(PageState {
            href: value["href"].as_str().unwrap_or_default().to_string(),
            ready: value["ready"].as_str().unwrap_or_default().to_string(),
            status: value["status"].as_u64().unwrap_or(0),
            text: value["text"].as_str().unwrap_or_default().to_string(),
            pre: value["pre"].as_str().map(str::to_string),
            stale: value["stale"].as_bool().unwrap_or(false),
        })
    }

    /// Marks the current document, so a wait can tell the next one from it (a navigation to
    /// the URL already showing changes nothing else a page can see).
    async fn mark_stale(&mut self) {
        self.eval("window.__cdpStale = true")
            .await
            .unwrap_or_else(|e| panic!("cannot mark the page: {e}"));
    }

    /// Polls until a new, fully loaded document satisfies `until`; panics with the last state
    /// seen after `DEADLINE`.
    pub async fn wait_for(&mut self, what: &str, until: impl Fn(&PageState) -> bool) -> PageState {
        let deadline = Instant::now() + DEADLINE;
        let mut last = Err("nothing yet".to_string());
        while Instant::now() < deadline {
            last = self.state().await;
            if let Ok(state) = &last {
                if !state.stale && state.ready == "complete" && until(state) {
                    return state.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "waited {DEADLINE:?} for {what}; the page shows {last:?}\nchromium stderr:\n{}",
            self.stderr.lock().unwrap()
        );
    }

    /// Opens `url` as if typed into the address bar; returns once the document it ends on (after
    /// any redirects) satisfies `until`.
    pub async fn navigate(
        &mut self,
        url: &str,
        what: &str,
        until: impl Fn(&PageState) -> bool,
    ) -> PageState {
        self.mark_stale().await;
        let result = self
            .call("Page.navigate", json!({"url": url}))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
        if let Some(error) = result.get("errorText").and_then(Value::as_str) {
            panic!("navigate to {url}: {error}");
        }
        self.wait_for(what, until).await
    }

    /// Types `text` into the field `selector` names, through the browser's input pipeline.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        let selector_js = serde_json::to_string(selector).unwrap();
        let focused = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector_js}); if (!e) return false; \
                 e.focus(); e.value = ''; return document.activeElement === e; }})()"
            ))
            .await
            .unwrap_or_else(|e| panic!("focus {selector}: {e}"));
        assert_eq!(focused, Value::Bool(true), "no focusable {selector}");
        self.call("Input.insertText", json!({"text": text}))
            .await
            .unwrap_or_else(|e| panic!("type into {selector}: {e}"));
        let value = self
            .eval(&format!("document.querySelector({selector_js}).value"))
            .await
            .unwrap();
        assert_eq!(
            value.as_str(),
            Some(text),
            "{selector} holds what was typed"
        );
    }

    /// Clicks the middle of the element `selector` names with the mouse; returns once the
    /// document the click leads to satisfies `until`.
    pub async fn click(
        &mut self,
        selector: &str,
        what: &str,
        until: impl Fn(&PageState) -> bool,
    ) -> PageState {
        let selector_js = serde_json::to_string(selector).unwrap();
        let point = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector_js}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
            ))
            .await
            .unwrap_or_else(|e| panic!("find {selector}: {e}"));
        let (Some(x), Some(y)) = (point[0].as_f64(), point[1].as_f64()) else {
            let page = self.state().await;
            panic!("no {selector} on the page: {page:?}");
        };
        self.mark_stale().await;
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
        }
        self.wait_for(what, until).await
    }

    /// The browser's cookies for `url`: (name, value, httpOnly).
    pub async fn cookies(&mut self, url: &str) -> Vec<(String, String, bool)> {
        let result = self
            .call("Network.getCookies", json!({"urls": [url]}))
            .await
            .unwrap_or_else(|e| panic!("cookies: {e}"));
        result["cookies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["value"].as_str().unwrap_or_default().to_string(),
                    c["httpOnly"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The whole group: the browser and every process it started.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The WebSocket of the browser's first page, from `/json/list` (polled: the page target may
/// appear a moment after the endpoint is announced).
async fn page_websocket(authority: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reply = send(&h1_client(), get(&format!("http://{authority}/json/list"))).await;
        if reply.status == 200 {
            let targets: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            let page = targets.as_array().into_iter().flatten().find_map(|t| {
                (t["type"] == "page")
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
                    .flatten()
            });
            if let Some(url) = page {
                return url;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no page target at http://{authority}/json/list"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
