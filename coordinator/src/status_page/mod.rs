//! The status page: `GET /` on the REST port, plain HTML, CSS and JavaScript
//! compiled into the binary (no build step, nothing fetched from elsewhere),
//! which polls `GET /status.json` every two seconds. Both need the `admin`
//! verb (the handlers in [`crate::rest`] check it).
//!
//! What the JSON says, and where each part comes from:
//! - regions and shards: the health flags of [`crate::regions`] (kept by the
//!   probe loop and by every request), and each region's health-probe round
//!   trips ([`activity::ProbeRtt`]);
//! - locks held: a majority read of every shard (the `ListLocks` read), the
//!   first [`MAX_PAGE_SIZE`] only, cached for [`HELD_CACHE`] so that viewers do
//!   not multiply the reads;
//! - the most contended resources: the engine's bounded top-K;
//! - rejections by reason and acquire latency: [`activity::Activity`], fed by
//!   the engine.
//!
//! Everything is this coordinator's own view: other coordinators serve theirs.

pub mod activity;

use std::time::{Duration, Instant};

use globallock_protocol::request::MAX_PAGE_SIZE;
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::LockEngine;
use crate::regions::Regions;

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// Its style sheet, at `/status/page.css`.
pub const PAGE_CSS: &str = include_str!("page.css");
/// Its script, at `/status/page.js`.
pub const PAGE_JS: &str = include_str!("page.js");

/// The page may load only its own style sheet and script and fetch only
/// `status.json`, from this origin: nothing from elsewhere, no inline code
/// (`data:` images: its empty icon, so that browsers do not ask for
/// `/favicon.ico`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// How long one count of held locks is reused.
pub const HELD_CACHE: Duration = Duration::from_secs(2);
/// Resources listed as most contended.
const TOP_CONTENDED: usize = 10;

/// The status page's own state: when this coordinator started, and the
/// latest count of held locks.
#[derive(Debug)]
pub struct StatusPage {
    started: Instant,
    held: tokio::sync::Mutex<Option<(Instant, HeldLocks)>>,
}

impl Default for StatusPage {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            held: tokio::sync::Mutex::new(None),
        }
    }
}

/// The locks held now, as far as the status page counts them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HeldLocks {
    /// Locks a majority of regions holds, among the first `limit` in
    /// resource order (`None`: the read failed).
    pub count: Option<usize>,
    /// Whether there are more than `limit` (then `count` is `limit`).
    pub more: bool,
    /// The most counted.
    pub limit: usize,
    /// How it was counted.
    pub source: &'static str,
    /// Why the read failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How old the count is, ms.
    pub age_ms: u64,
}

/// One region as the page shows it.
#[derive(Debug, Serialize)]
struct RegionView {
    name: String,
    /// `healthy` (every shard), `degraded` (some) or `down` (none).
    health: &'static str,
    shards: Vec<ShardHealth>,
    /// Round trips of the probes answered in the last
    /// [`activity::PROBE_WINDOW`].
    probe: Option<activity::ProbeView>,
    /// How long probes have gone unanswered, ms (`None`: the latest was
    /// answered).
    unanswered_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ShardHealth {
    name: String,
    healthy: bool,
}

/// One shard across regions.
#[derive(Debug, Serialize)]
struct ShardView {
    name: String,
    healthy_regions: usize,
    regions: usize,
    /// A majority of regions is healthy for it: requests are not refused at
    /// once.
    quorum: bool,
}

impl StatusPage {
    /// Everything the page shows, as JSON.
    pub async fn snapshot(&self, engine: &LockEngine, regions: &Regions) -> Value {
        let shard_names = regions.shard_names();
        let region_views: Vec<RegionView> = (0..regions.len())
            .map(|i| {
                let region = regions.get(i);
                let healthy = region.shard_health();
                let up = healthy.iter().filter(|h| **h).count();
                RegionView {
                    name: region.name.clone(),
                    health: if up == healthy.len() {
                        "healthy"
                    } else if up == 0 {
                        "down"
                    } else {
                        "degraded"
                    },
                    shards: shard_names
                        .iter()
                        .zip(healthy)
                        .map(|(name, healthy)| ShardHealth {
                            name: name.clone(),
                            healthy,
                        })
                        .collect(),
                    probe: region.probe_rtt.view(),
                    unanswered_ms: region
                        .probe_rtt
                        .unanswered_for()
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect();
        let majority = globallock_protocol::quorum::majority(regions.len());
        let shards: Vec<ShardView> = shard_names
            .iter()
            .enumerate()
            .map(|(s, name)| {
                let healthy_regions = region_views
                    .iter()
                    .filter(|r| r.shards.get(s).is_some_and(|h| h.healthy))
                    .count();
                ShardView {
                    name: name.clone(),
                    healthy_regions,
                    regions: regions.len(),
                    quorum: healthy_regions >= majority,
                }
            })
            .collect();
        let contended: Vec<Value> = engine
            .contention()
            .top(TOP_CONTENDED)
            .into_iter()
            .map(|(resource, refused, overcount)| {
                json!({"resource": resource, "refused_acquires": refused, "max_overcount": overcount})
            })
            .collect();
        json!({
            "coordinator": {
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_s": self.started.elapsed().as_secs(),
                "access_control": engine.access().is_some(),
            },
            "ready": regions.readiness().is_ok(),
            "regions": region_views,
            "shards": shards,
            "locks_held": self.held(engine).await,
            "contended": contended,
            "rejections": engine.activity().rejections(),
            "acquire_latency": engine.activity().acquires(),
        })
    }

    /// The locks held now, counted at most every [`HELD_CACHE`] (one read at a
    /// time, however many viewers).
    async fn held(&self, engine: &LockEngine) -> HeldLocks {
        let mut cached = self.held.lock().await;
        if let Some((at, held)) = cached.as_ref()
            && at.elapsed() < HELD_CACHE
        {
            return HeldLocks {
                age_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
                ..held.clone()
            };
        }
        let limit = MAX_PAGE_SIZE;
        let source = "majority read of every shard (ListLocks)";
        let held = match engine
            .list("", u64::try_from(limit).unwrap_or(u64::MAX), "")
            .await
        {
            Ok(page) => HeldLocks {
                count: Some(page.locks.len()),
                more: !page.next_page_token.is_empty(),
                limit,
                source,
                error: None,
                age_ms: 0,
            },
            Err(error) => HeldLocks {
                count: None,
                more: false,
                limit,
                source,
                error: Some(error.to_string()),
                age_ms: 0,
            },
        };
        *cached = Some((Instant::now(), held.clone()));
        held
    }
}
