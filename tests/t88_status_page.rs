//! The status page (`GET /` on the REST port) in a real browser: headless
//! Chromium (Debian's `chromium`) driven by playwright-core
//! (`tests/browser/status_page.mjs`) loads it against a live cluster, sees
//! every region healthy, and sees a region turn red when its agent stops. The
//! screenshot is left at `target/status-page.png`. Also: the page and its JSON
//! need the `admin` verb when access control is on.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use globallock_proto::v1::ReleaseRequest;
use harness::http::https_request;
use harness::{Cluster, ClusterOptions, acquire, eventually};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// The region whose agent is stopped.
const STOPPED: usize = 1;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Where the screenshot goes: the workspace's `target/`.
fn screenshot_path() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests
        .parent()
        .unwrap_or(tests)
        .join("target")
        .join("status-page.png")
}

/// The browser and its driver are installed (`make deps` installs both).
fn require_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (make deps, or \
         apt-get install --no-install-recommends chromium)"
    );
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is missing: run `npm ci` in tests/browser (make deps does)"
    );
}

async fn status_json(cluster: &Cluster) -> Value {
    let response = cluster
        .http(cluster.rest_addrs[0], "GET", "/status.json", &[], None)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_region_turn_red_when_its_agent_stops() -> anyhow::Result<()> {
    require_browser();
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut client = cluster.client(0).await?;

    // Something to show: five held locks, a contended resource, rejections.
    for i in 0..5 {
        client
            .acquire(acquire(&format!("orders/{i}"), "status-test", 120_000, 0))
            .await?;
    }
    for _ in 0..3 {
        let refused = client
            .acquire(acquire("orders/0", "intruder", 5_000, 0))
            .await;
        assert!(refused.is_err(), "orders/0 is held: {refused:?}");
    }

    // The JSON first: what the page will draw.
    let status = eventually(Duration::from_secs(30), "every region healthy", || async {
        let status = status_json(&cluster).await;
        let healthy = status["regions"]
            .as_array()
            .is_some_and(|r| r.len() == 3 && r.iter().all(|r| r["health"] == "healthy"));
        healthy.then_some(status)
    })
    .await;
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["locks_held"]["count"], 5, "{status}");
    assert_eq!(status["locks_held"]["more"], false, "{status}");
    assert_eq!(status["contended"][0]["resource"], "orders/0", "{status}");
    assert_eq!(status["contended"][0]["refused_acquires"], 3, "{status}");
    let held = status["rejections"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "held")
        .cloned()
        .unwrap_or_default();
    assert_eq!(held["total"], 3, "{status}");
    assert_eq!(status["acquire_latency"]["acquires"], 8, "{status}");
    assert_eq!(status["acquire_latency"]["refused"], 3, "{status}");
    for region in status["regions"].as_array().unwrap() {
        assert!(region["probe"]["last_ms"].as_f64().is_some(), "{region}");
        assert_eq!(region["shards"][0]["name"], "shard-0", "{region}");
    }

    // A steady trickle of acquires while the browser looks, for the chart:
    // granted and released at once (held locks stay 5, but for a moment 6),
    // and every fifth a refused one. Bounded: 600 rounds at most.
    let mut load_client = cluster.client(0).await?;
    let load = tokio::spawn(async move {
        for i in 0..600u32 {
            let granted = load_client
                .acquire(acquire(&format!("load/{}", i % 4), "status-load", 5_000, 0))
                .await;
            if let Ok(granted) = granted {
                let lock_id = granted.into_inner().lock_id;
                let _ = load_client.release(ReleaseRequest { lock_id }).await;
            }
            if i % 5 == 0 {
                let _ = load_client
                    .acquire(acquire("orders/1", "status-load", 5_000, 0))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });

    // Now the browser.
    let url = format!("{}://{}/", cluster.scheme(), cluster.rest_addrs[0]);
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);
    let region = cluster.regions[STOPPED].name.clone();
    let mut node = tokio::process::Command::new("node")
        .arg(browser_dir().join("status_page.mjs"))
        .arg(&url)
        .arg(&screenshot)
        .arg(&region)
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (Node.js) must be installed to run the browser test");
    let mut stdout = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut stderr = node.stderr.take().unwrap();
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    // The page shows every region healthy...
    let mut seen = Vec::new();
    let healthy = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = stdout.next_line().await? {
            seen.push(line.clone());
            if line == "all-healthy" {
                return Ok::<bool, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    if !matches!(healthy, Ok(Ok(true))) {
        load.abort();
        let _ = node.kill().await;
        panic!(
            "the page never showed every region healthy: {healthy:?}\nstdout: {seen:?}\nstderr: {}",
            stderr_text.await.unwrap_or_default()
        );
    }

    // ...then the agent stops, and the page turns that region red.
    cluster.stop_agent(STOPPED).await;
    let finished = tokio::time::timeout(Duration::from_secs(180), async {
        let mut rest = Vec::new();
        while let Some(line) = stdout.next_line().await? {
            rest.push(line);
        }
        let status = node.wait().await?;
        Ok::<_, std::io::Error>((status, rest))
    })
    .await;
    load.abort();
    let stderr_text = stderr_text.await.unwrap_or_default();
    let (exit, lines) = match finished {
        Ok(Ok(done)) => done,
        other => {
            load.abort();
            let _ = node.kill().await;
            panic!("the browser check did not finish: {other:?}\nstderr: {stderr_text}");
        }
    };
    assert!(
        exit.success(),
        "the browser check failed ({exit}); screenshot: {}\nstdout: {lines:?}\nstderr: {stderr_text}",
        screenshot.display()
    );
    let shown: Value = lines
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary from the browser: {lines:?}\n{stderr_text}"));
    println!("the page shows: {shown}");

    assert_eq!(shown["health"][&region], "down", "{shown}");
    for other in ["region-a", "region-c"] {
        assert_eq!(shown["health"][other], "healthy", "{shown}");
    }
    assert_eq!(shown["down_pill_text"], "down", "{shown}");
    assert!(
        shown["down_probe_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("no answer")),
        "{shown}"
    );
    // Red: the pill of the stopped region is red, the others are not.
    let rgb = |v: &Value| -> Vec<u32> {
        v.as_str()
            .unwrap_or_default()
            .trim_start_matches("rgba(")
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .filter_map(|c| c.trim().parse::<f64>().ok())
            .map(|c| c as u32)
            .collect()
    };
    let down = rgb(&shown["down_pill_background"]);
    assert!(
        down.len() >= 3 && down[0] > 150 && down[1] < 80 && down[2] < 80,
        "not red: {shown}"
    );
    let up = rgb(&shown["healthy_pill_background"]);
    assert!(up.len() >= 3 && up[1] > up[0], "not green: {shown}");
    // With one region of three down, the shard keeps its majority.
    assert_eq!(shown["ready"], "ready", "{shown}");
    assert!(shown["held"] == "5" || shown["held"] == "6", "{shown}");
    assert!(
        shown["contended"]
            .as_array()
            .is_some_and(|c| c.iter().any(|r| r == "orders/0")),
        "{shown}"
    );
    assert!(
        shown["rejection_reasons"]
            .as_array()
            .is_some_and(|c| c.iter().any(|r| r == "held")),
        "{shown}"
    );
    assert!(shown["chart_lines"].as_u64() >= Some(1), "{shown}");
    assert_eq!(shown["stale"], false, "{shown}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());

    // The JSON agrees.
    let status = status_json(&cluster).await;
    assert_eq!(status["regions"][STOPPED]["health"], "down", "{status}");
    assert!(
        status["regions"][STOPPED]["unanswered_ms"].is_u64(),
        "{status}"
    );
    assert!(status["regions"][0]["unanswered_ms"].is_null(), "{status}");
    assert_eq!(status["shards"][0]["healthy_regions"], 2, "{status}");
    assert_eq!(status["shards"][0]["quorum"], true, "{status}");
    Ok(())
}

const ADMIN_TOKEN: &str = "status-admin-token-7d2e";
const READER_TOKEN: &str = "status-reader-token-19ab";

/// `ops` (a token) is an admin; `reader` (a token) may only describe.
fn access() -> coordinator::config::AccessEntry {
    use globallock_protocol::access::{PrincipalEntry, Rule, TokenEntry, Verb, token_digest};
    let principal = |name: &str, token: &str| PrincipalEntry {
        name: name.into(),
        identities: Vec::new(),
        tokens: vec![TokenEntry {
            sha256: token_digest(token),
            expires_unix_ms: None,
        }],
    };
    let rule = |who: &str, verbs: &[Verb]| Rule {
        prefix: String::new(),
        principals: vec![who.into()],
        verbs: verbs.to_vec(),
    };
    coordinator::config::AccessEntry {
        principals: vec![
            principal("ops", ADMIN_TOKEN),
            principal("reader", READER_TOKEN),
        ],
        rules: vec![
            rule("ops", &[Verb::Describe, Verb::Admin]),
            rule("reader", &[Verb::Describe]),
        ],
        max_locks_per_principal: 10_000,
        max_waiters_per_principal: 1_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_access_control_the_page_and_its_json_need_admin() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        tls: true,
        access: Some(access()),
        ..ClusterOptions::default()
    })
    .await?;
    let rest = cluster.rest_addrs[0];
    let ca = cluster.tls.as_ref().unwrap().ca.clone();
    let get = |path: &'static str, token: Option<&'static str>| {
        let ca = ca.clone();
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            https_request(rest, &ca, None, "GET", path, &headers, None)
                .await
                .unwrap()
        }
    };

    // Anonymous: 401, for the page, its files and its JSON.
    for path in ["/", "/status.json", "/status/page.js", "/status/page.css"] {
        let refused = get(path, None).await;
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
        assert_eq!(
            refused.json()["type"],
            "urn:globallock:problem:unauthenticated",
            "{path}"
        );
    }
    // Identified but not an admin: 403.
    for path in ["/", "/status.json"] {
        let refused = get(path, Some(READER_TOKEN)).await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
    }
    // An admin gets the page, with a policy that keeps it to its own origin...
    let page = get("/", Some(ADMIN_TOKEN)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    assert!(page.body.contains("status/page.js"), "{}", page.body);
    for path in ["/status/page.js", "/status/page.css"] {
        let file = get(path, Some(ADMIN_TOKEN)).await;
        assert_eq!(file.status, 200, "{path}");
        // No external fetches: nothing in the page's files names another host.
        assert!(!file.body.contains("https://"), "{path} names a URL");
    }
    // ...and the JSON, where the refusals above show as rejections.
    let status = get("/status.json", Some(ADMIN_TOKEN)).await;
    assert_eq!(status.status, 200, "{}", status.body);
    let status = status.json();
    assert_eq!(status["coordinator"]["access_control"], true, "{status}");
    let reasons: Vec<(String, u64)> = status["rejections"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or_default().to_owned(),
                r["total"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("unauthenticated".into(), 4))
            && reasons.contains(&("permission-denied".into(), 2)),
        "{reasons:?}"
    );
    assert_eq!(status["rejections"]["latest"][0]["op"], "admin", "{status}");
    Ok(())
}
