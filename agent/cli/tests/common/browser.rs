//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`, installed
//! by scripts/install.sh) with fantoccini; screenshots kept under the test's output folder.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};

/// A chromedriver process and a browser session, both ended on drop.
pub struct Browser {
    driver: Child,
    /// The WebDriver session.
    pub client: Client,
    shots: PathBuf,
    taken: usize,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The chromedriver and chromium binaries (Debian's paths unless overridden).
fn binaries() -> (String, String) {
    (
        std::env::var("TREASURY_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
        std::env::var("TREASURY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    )
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session; screenshots go
    /// to `$CARGO_TARGET_TMPDIR/browser/<name>/`.
    pub async fn start(name: &str) -> Self {
        let (driver_bin, chromium) = binaries();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{driver_bin}: {e} (run scripts/install.sh: it installs chromium-driver)")
            });
        let mut line = String::new();
        let mut out = BufReader::new(driver.stdout.take().unwrap());
        while !line.contains("started successfully") {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("chromedriver ended before it started");
            }
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1400", format!("--user-data-dir={}", profile.path().display())],
            }
        });
        let caps = caps.as_object().unwrap().clone().into_iter().collect();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with headless Chromium");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser").join(name);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Self { driver, client, shots, taken: 0, _profile: profile }
    }

    /// Saves a screenshot of the page as `NN-label.png`; returns its path.
    pub async fn shot(&mut self, label: &str) -> PathBuf {
        self.taken += 1;
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{:02}-{label}.png", self.taken));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The visible text of the page (read again while a navigation replaces the page).
    pub async fn text(&self) -> String {
        let mut last = None;
        for _ in 0..50 {
            match self.client.find(Locator::Css("body")).await {
                Ok(body) => match body.text().await {
                    Ok(text) => return text,
                    Err(e) => last = Some(e),
                },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no page text: {last:?}")
    }

    /// The page's text once it contains `want` (a navigation may still be under way), or the last
    /// text read.
    pub async fn text_with(&self, want: &str) -> String {
        let mut text = String::new();
        for _ in 0..100 {
            text = self.text().await;
            if text.contains(want) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        text
    }

    /// Types `value` into the element `css`.
    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        let e = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        e.click().await.unwrap();
    }

    /// Signs in on the approvals page at `base`.
    pub async fn sign_in(&self, base: &str, name: &str, password: &str) {
        self.client.goto(&format!("{base}/approvals/login")).await.unwrap();
        self.fill("#name", name).await;
        self.fill("#password", password).await;
        self.click("#sign-in").await;
    }

    /// Tears the session down.
    pub async fn close(self) {
        let client = self.client.clone();
        let _ = client.close().await;
    }
}
