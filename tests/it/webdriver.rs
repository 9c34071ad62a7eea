//! A small W3C WebDriver client over reqwest: the dozen commands the
//! console's browser tests and `scripts/console-screenshots` send to
//! chromedriver. (A WebDriver crate brought some forty crates, ICU data
//! among them, into every test build for these dozen JSON requests.)

#![allow(
    dead_code,
    reason = "shared by the browser tests and the screenshots example; each uses a part"
)]

use std::time::Duration;

use serde_json::{json, Value};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free port, stopped when dropped.
pub struct Driver {
    child: std::process::Child,
    pub url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub async fn start(chromedriver: &str) -> Result<Driver, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = std::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {chromedriver}: {e}"))?;
        // Owned at once, so every path below stops it.
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if reqwest::get(format!("{}/status", driver.url)).await.is_ok() {
                return Ok(driver);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("chromedriver did not start on port {port}"))
    }

    /// A headless chromium session with `args`.
    pub async fn session(&self, args: &[String]) -> Result<Browser, String> {
        let http = reqwest::Client::new();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        } } });
        let v = send(
            &http,
            reqwest::Method::POST,
            &format!("{}/session", self.url),
            Some(caps),
        )
        .await?;
        let id = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {v}"))?;
        Ok(Browser {
            http,
            base: format!("{}/session/{id}", self.url),
        })
    }
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", v["value"]["message"]));
    }
    Ok(v["value"].clone())
}

/// One browser session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
}

/// An element in the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        send(&self.http, method, &format!("{}{path}", self.base), body).await
    }

    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    pub async fn current_url(&self) -> Result<String, String> {
        let v = self.call(reqwest::Method::GET, "/url", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element<'_>, String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        let id = v[ELEMENT]
            .as_str()
            .ok_or_else(|| format!("no element in {v}"))?;
        Ok(Element {
            browser: self,
            id: id.to_owned(),
        })
    }

    /// Waits (up to 15 s) for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> Result<Element<'_>, String> {
        let mut last = String::new();
        for _ in 0..150 {
            match self.find(css).await {
                Ok(e) => return Ok(e),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("`{css}` never appeared: {last}"))
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await?;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    pub async fn execute(&self, script: &str) -> Result<Value, String> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    pub async fn close(self) -> Result<(), String> {
        self.call(reqwest::Method::DELETE, "", None).await.map(drop)
    }
}

impl Element<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        what: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        self.browser
            .call(method, &format!("/element/{}/{what}", self.id), body)
            .await
    }

    pub async fn text(&self) -> Result<String, String> {
        let v = self.call(reqwest::Method::GET, "text", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn tag_name(&self) -> Result<String, String> {
        let v = self.call(reqwest::Method::GET, "name", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn is_enabled(&self) -> Result<bool, String> {
        let v = self.call(reqwest::Method::GET, "enabled", None).await?;
        Ok(v.as_bool().unwrap_or(false))
    }

    pub async fn click(&self) -> Result<(), String> {
        self.call(reqwest::Method::POST, "click", Some(json!({})))
            .await
            .map(drop)
    }

    pub async fn clear(&self) -> Result<(), String> {
        self.call(reqwest::Method::POST, "clear", Some(json!({})))
            .await
            .map(drop)
    }

    /// Types `text` into the element, as a person would.
    pub async fn send_keys(&self, text: &str) -> Result<(), String> {
        self.call(
            reqwest::Method::POST,
            "value",
            Some(json!({ "text": text })),
        )
        .await
        .map(drop)
    }
}
