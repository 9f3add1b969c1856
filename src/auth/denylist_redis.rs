//! The shared revocation list: Redis holds it for every replica, and each replica keeps a copy
//! in memory ([`LiveDenylist`]) so a request never waits on the network. This source must never
//! un-revoke by accident: a Redis error leaves the copy in force, and a Redis that lost its data
//! (restarted without persistence, flushed, evicted) is detected by its epoch marker and
//! reported, and the entries it lost stay enforced here and are written back.
//!
//! # Data model (keys under `key_prefix`, default `authgate:revocation:`)
//!
//! - `{prefix}epoch`: a random marker written once (`SET NX`), never with a TTL. A replica
//!   remembers the marker it synchronised with and compares it at every (re)synchronisation
//!   and every heartbeat: missing or different means the data was lost.
//! - `{prefix}entry:{sha256 of the target}`: one key per entry, its value the entry's JSON
//!   (plus `reason`, `by`, `at`), expiring at the entry's `expires` (`EXAT`).
//! - `{prefix}changes`: the pub/sub channel on which every add and remove is announced, in
//!   the same `MULTI` as the write, so the announcement order is the write order.
//!
//! # Synchronisation
//!
//! Subscribe first, then read the marker and `SCAN` every entry: a change made during the scan
//! is queued on the subscription and applied after the load, so none falls between the two.
//! Then apply announcements as they come, and check the marker every second (which also tells
//! a silent network from an idle channel). Any error ends the session; the loop reconnects with
//! jittered exponential backoff and loads everything again, so changes missed while
//! disconnected (adds and removes alike) arrive with the reload.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::MultiplexedConnection;

use crate::auth::denylist::{Denylist, Entry, Target};
use crate::auth::denylist_live::{Change, LiveDenylist};
use crate::auth::jwt::now_unix;
use crate::config::build_revocation::RedisSettings;
use crate::ops::metrics::RevocationMetrics;

/// Every Redis call gets this long; a hung server counts as unreachable.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Expired entries are dropped from memory this often (they stop applying at once anyway).
const COMPACT_EVERY: Duration = Duration::from_secs(600);
const SCAN_COUNT: usize = 1000;

/// Why a session with Redis ended, or could not start.
#[derive(Debug)]
pub enum RedisSourceError {
    Redis(String),
    Timeout,
    /// The subscription ended: the server closed the connection.
    SubscriptionClosed,
    /// The epoch marker disappeared or changed under a running session.
    EpochChanged,
}

impl std::fmt::Display for RedisSourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisSourceError::Redis(e) => write!(f, "{e}"),
            RedisSourceError::Timeout => write!(f, "no answer within {IO_TIMEOUT:?}"),
            RedisSourceError::SubscriptionClosed => write!(f, "the subscription connection closed"),
            RedisSourceError::EpochChanged => write!(f, "the epoch marker changed"),
        }
    }
}

impl From<redis::RedisError> for RedisSourceError {
    fn from(error: redis::RedisError) -> Self {
        RedisSourceError::Redis(error.to_string())
    }
}

async fn io<T>(
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisSourceError> {
    match tokio::time::timeout(IO_TIMEOUT, future).await {
        Ok(result) => result.map_err(RedisSourceError::from),
        Err(_) => Err(RedisSourceError::Timeout),
    }
}

fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        // Uniqueness is what matters for a marker; the clock gives it without randomness.
        return format!("{:x}", unix_millis());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of a write through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Added,
    Removed { found: bool },
}

pub struct RedisDenylist {
    client: redis::Client,
    settings: RedisSettings,
    list: LiveDenylist,
    /// Entries Redis lost while this replica held them, waiting to be written back: enforced
    /// whatever a resynchronisation finds, until written back, expired or explicitly removed.
    pinned: Mutex<Denylist>,
    /// The marker this replica last synchronised with.
    epoch: Mutex<Option<String>>,
    synced: AtomicBool,
    connected: AtomicBool,
    /// Unix milliseconds when Redis last confirmed this copy in sync; 0 before the first load.
    last_ok_ms: AtomicI64,
    /// The API's connection, made on first use and dropped on error.
    writer: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    metrics: RevocationMetrics,
    /// Redis settings that make data loss likely are reported once per process, not per
    /// reconnection.
    warned_settings: AtomicBool,
}

impl RedisDenylist {
    pub fn new(settings: RedisSettings, metrics: RevocationMetrics) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|_| format!("{} is not a valid Redis URL", settings.display))?;
        metrics.connected.set(0);
        Ok(Arc::new(RedisDenylist {
            client,
            settings,
            list: LiveDenylist::default(),
            pinned: Mutex::new(Denylist::empty()),
            epoch: Mutex::new(None),
            synced: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            last_ok_ms: AtomicI64::new(0),
            writer: tokio::sync::Mutex::new(None),
            metrics,
            warned_settings: AtomicBool::new(false),
        }))
    }

    /// The in-memory copy requests check.
    pub fn list(&self) -> &LiveDenylist {
        &self.list
    }

    /// `scheme://host:port`, safe to log.
    pub fn display(&self) -> &str {
        &self.settings.display
    }

    /// Whether the first full load has completed (readiness waits for it).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Time since Redis last confirmed this copy; `None` before the first load.
    pub fn last_sync_age(&self) -> Option<Duration> {
        let at = self.last_ok_ms.load(Ordering::Relaxed);
        if at == 0 {
            return None;
        }
        let age = unix_millis().saturating_sub(at).max(0);
        Some(Duration::from_millis(u64::try_from(age).unwrap_or(0)))
    }

    /// Whether the copy is recent enough to rely on: loaded, and confirmed within
    /// `unreachable_after`. Routes that fail closed refuse requests otherwise.
    pub fn available(&self) -> bool {
        self.last_sync_age()
            .is_some_and(|age| age <= self.settings.unreachable_after)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.settings.key_prefix)
    }

    fn entry_key(&self, target: &Target) -> String {
        let digest = crate::auth::keys::sha256(&[target.identity().as_bytes()]);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.key(&format!("entry:{hex}"))
    }

    fn mark_ok(&self) {
        self.last_ok_ms.store(unix_millis(), Ordering::Relaxed);
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.metrics.connected.set(i64::from(up));
    }

    /// Starts the synchronisation loop. It holds only a `Weak`, so it ends by itself once every
    /// owner has dropped the source.
    pub fn spawn_sync(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(sync_loop(weak))
    }

    /// Subscribes, checks the marker, loads every entry and installs the copy. Returns the
    /// subscription to follow.
    async fn resync(
        &self,
    ) -> Result<(redis::aio::PubSubStream, MultiplexedConnection), RedisSourceError> {
        let mut pubsub = io(self.client.get_async_pubsub()).await?;
        io(pubsub.subscribe(self.key("changes"))).await?;
        let mut conn = io(self.client.get_multiplexed_async_connection()).await?;
        self.check_server_settings(&mut conn).await;
        let loss = self.check_epoch(&mut conn).await?;
        let loaded = self.load_all(&mut conn).await?;
        let now = now_unix();
        let restore = {
            let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(why) = loss {
                // Everything this replica enforced is kept: Redis forgetting an entry is not
                // an operator removing it.
                let held = self.list.to_denylist();
                let lost: Vec<Entry> = held
                    .entries()
                    .into_iter()
                    .filter(|e| !loaded.contains(&e.target))
                    .collect();
                pinned.merge(&held);
                pinned.prune(now);
                self.metrics.data_loss.inc();
                tracing::error!(
                    redis = %self.settings.display,
                    why,
                    held = held.len(),
                    lost = lost.len(),
                    "revocation data loss: Redis lost the shared revocation list (restarted without \
                     persistence, flushed, or evicted keys); every entry this replica held stays \
                     enforced and is written back. Configure persistence and maxmemory-policy \
                     noeviction"
                );
            }
            pinned.prune(now);
            let mut next = loaded;
            next.merge(&pinned);
            self.list.replace(next);
            pinned.entries()
        };
        if !restore.is_empty() {
            self.restore(&mut conn, &restore).await?;
            // Back in Redis under the new marker, so Redis is authoritative for them again (an
            // operator's later removal must reach them like any other entry).
            let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
            for entry in &restore {
                pinned.remove(&entry.target);
            }
        }
        self.metrics.resyncs.inc();
        self.synced.store(true, Ordering::Relaxed);
        self.mark_ok();
        self.set_connected(true);
        Ok((pubsub.into_on_message(), conn))
    }

    /// Writes lost entries back. `SET NX` keeps whatever Redis holds now, so this never
    /// shortens or overwrites an entry written since.
    async fn restore(
        &self,
        conn: &mut MultiplexedConnection,
        entries: &[Entry],
    ) -> Result<(), RedisSourceError> {
        let now = now_unix();
        for chunk in entries.chunks(500) {
            let mut pipe = redis::pipe();
            for entry in chunk {
                let mut record = entry.to_json();
                record["reason"] = "restored after Redis lost its data".into();
                record["at"] = now.into();
                let mut set = redis::cmd("SET");
                set.arg(self.entry_key(&entry.target))
                    .arg(record.to_string())
                    .arg("NX");
                if let Some(expires) = entry.expires {
                    if expires <= now {
                        continue;
                    }
                    set.arg("EXAT").arg(expires);
                }
                pipe.add_command(set).ignore();
            }
            io(pipe.query_async::<()>(conn)).await?;
        }
        tracing::warn!(
            redis = %self.settings.display,
            entries = entries.len(),
            "revocation entries written back to Redis after data loss"
        );
        Ok(())
    }

    /// Warns once when Redis may drop entries on its own: an eviction policy other than
    /// `noeviction` (entries carry TTLs, so even `volatile-*` policies evict them), or no
    /// persistence at all.
    async fn check_server_settings(&self, conn: &mut MultiplexedConnection) {
        if self.warned_settings.load(Ordering::Relaxed) {
            return;
        }
        let config = |name: &'static str| {
            let mut conn = conn.clone();
            async move {
                let pairs: Result<Vec<String>, _> = io(redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut conn))
                .await;
                pairs.map(|p| p.get(1).cloned())
            }
        };
        let redis = &self.settings.display;
        match config("maxmemory-policy").await {
            Ok(Some(policy)) if policy != "noeviction" => {
                tracing::warn!(
                    redis = %redis,
                    policy,
                    "Redis maxmemory-policy can evict revocation entries (an evicted entry is \
                     reported as data loss, never silently dropped here, but new replicas would \
                     not see it); set maxmemory-policy noeviction"
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(redis = %redis, %error, "cannot read Redis maxmemory-policy (CONFIG GET refused?); make sure it is noeviction");
            }
        }
        let save = config("save").await.ok().flatten().unwrap_or_default();
        let aof = config("appendonly")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        if save.is_empty() && aof == "no" {
            tracing::warn!(
                redis = %redis,
                "Redis persists nothing (save \"\" and appendonly no): a Redis restart loses the \
                 revocation list; replicas keep enforcing what they hold and report data loss"
            );
        }
        self.warned_settings.store(true, Ordering::Relaxed);
    }

    /// Reads the marker and compares it with the one this replica knows; creates it when
    /// missing. `Some(why)` when the data was lost.
    async fn check_epoch(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<&'static str>, RedisSourceError> {
        let key = self.key("epoch");
        let mut current: Option<String> = io(redis::cmd("GET").arg(&key).query_async(conn)).await?;
        let known = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut loss = None;
        if current.is_none() {
            if known.is_some() {
                loss = Some("epoch marker missing");
            }
            let _: Option<String> = io(redis::cmd("SET")
                .arg(&key)
                .arg(random_hex(16))
                .arg("NX")
                .query_async(conn))
            .await?;
            current = io(redis::cmd("GET").arg(&key).query_async(conn)).await?;
        } else if known.is_some() && known != current {
            loss = Some("epoch marker changed");
        }
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = current;
        Ok(loss)
    }

    /// Whether the marker is still the one synchronised with (the heartbeat).
    async fn epoch_unchanged(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<bool, RedisSourceError> {
        let current: Option<String> =
            io(redis::cmd("GET").arg(self.key("epoch")).query_async(conn)).await?;
        let known = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(current.is_some() && current == known)
    }

    /// Every entry in Redis, by `SCAN` and `MGET`. An unreadable value is skipped and logged:
    /// one bad key must not keep every other revocation out.
    async fn load_all(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Denylist, RedisSourceError> {
        let pattern = self.key("entry:*");
        let mut cursor: u64 = 0;
        let mut list = Denylist::empty();
        let mut bad = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = io(redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(conn))
            .await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> =
                    io(redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
                for value in values.into_iter().flatten() {
                    match serde_json::from_str(&value)
                        .map_err(|e| e.to_string())
                        .and_then(|v| Entry::from_json(&v))
                    {
                        Ok(entry) => list.add(&entry),
                        Err(_) => bad += 1,
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if bad > 0 {
            tracing::warn!(redis = %self.settings.display, bad, "revocation entries in Redis that are not valid entry JSON were skipped");
        }
        Ok(list)
    }

    /// Applies announced changes in order. Removes also unpin: an explicit removal is the one
    /// way an entry leaves early.
    fn apply_announcements(&self, payloads: &[String]) {
        let mut changes = Vec::with_capacity(payloads.len());
        let now_ms = unix_millis();
        for payload in payloads {
            let parsed: Result<(String, Entry, Option<i64>), String> =
                serde_json::from_str::<serde_json::Value>(payload)
                    .map_err(|e| e.to_string())
                    .and_then(|v| {
                        let op = v["op"].as_str().unwrap_or_default().to_string();
                        let entry = Entry::from_json(&v["entry"])?;
                        Ok((op, entry, v["at_ms"].as_i64()))
                    });
            let Ok((op, entry, at_ms)) = parsed else {
                tracing::warn!(redis = %self.settings.display, "an unreadable revocation announcement was skipped");
                continue;
            };
            if let Some(at) = at_ms {
                let lag = now_ms.saturating_sub(at).max(0) as f64 / 1000.0;
                self.metrics.apply_lag.observe(lag);
            }
            match op.as_str() {
                "add" => changes.push(Change::Add(entry)),
                "remove" => {
                    self.pinned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&entry.target);
                    changes.push(Change::Remove(entry.target));
                }
                _ => {}
            }
        }
        self.list.apply(&changes, now_unix());
        self.mark_ok();
    }

    async fn writer(&self) -> Result<MultiplexedConnection, RedisSourceError> {
        let mut slot = self.writer.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = io(self.client.get_multiplexed_async_connection()).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Writes one change to Redis and announces it to every replica (this one included). An add
    /// of an entry Redis already holds keeps the later expiry, as duplicates in the file do.
    pub async fn write(
        &self,
        change: &Change,
        record: serde_json::Value,
    ) -> Result<Written, RedisSourceError> {
        match self.write_once(change, record.clone()).await {
            Ok(written) => Ok(written),
            Err(_) => {
                // The kept connection may have died with a Redis restart: one more try on a new
                // one. Repeating the write is harmless (an add is idempotent; a repeated remove
                // only reports `found: false`).
                *self.writer.lock().await = None;
                let result = self.write_once(change, record).await;
                if result.is_err() {
                    *self.writer.lock().await = None;
                }
                result
            }
        }
    }

    async fn write_once(
        &self,
        change: &Change,
        mut record: serde_json::Value,
    ) -> Result<Written, RedisSourceError> {
        let mut conn = self.writer().await?;
        let channel = self.key("changes");
        match change {
            Change::Add(entry) => {
                let key = self.entry_key(&entry.target);
                let existing: Option<String> =
                    io(redis::cmd("GET").arg(&key).query_async(&mut conn)).await?;
                let mut entry = entry.clone();
                if let Some(old) = existing
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                    .and_then(|v| Entry::from_json(&v).ok())
                {
                    entry.expires = match (old.expires, entry.expires) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                if let Some(expires) = entry.expires {
                    record["expires"] = expires.into();
                }
                let announcement = serde_json::json!({
                    "op": "add", "entry": entry.to_json(), "at_ms": unix_millis(),
                });
                let mut set = redis::cmd("SET");
                set.arg(&key).arg(record.to_string());
                if let Some(expires) = entry.expires {
                    set.arg("EXAT").arg(expires);
                }
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .add_command(set)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(&channel)
                    .arg(announcement.to_string())
                    .ignore();
                io(pipe.query_async::<()>(&mut conn)).await?;
                Ok(Written::Added)
            }
            Change::Remove(target) => {
                let announcement = serde_json::json!({
                    "op": "remove",
                    "entry": Entry { target: target.clone(), expires: None }.to_json(),
                    "at_ms": unix_millis(),
                });
                let (deleted,): (i64,) = io(redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(self.entry_key(target))
                    .cmd("PUBLISH")
                    .arg(&channel)
                    .arg(announcement.to_string())
                    .ignore()
                    .query_async(&mut conn))
                .await?;
                Ok(Written::Removed { found: deleted > 0 })
            }
        }
    }

    /// Every stored record, as written (entry fields plus `reason`, `by`, `at`).
    pub async fn records(&self) -> Result<Vec<serde_json::Value>, RedisSourceError> {
        match self.records_once().await {
            Ok(records) => Ok(records),
            Err(_) => {
                // As for writes: the kept connection may be stale.
                *self.writer.lock().await = None;
                let result = self.records_once().await;
                if result.is_err() {
                    *self.writer.lock().await = None;
                }
                result
            }
        }
    }

    async fn records_once(&self) -> Result<Vec<serde_json::Value>, RedisSourceError> {
        async {
            let mut conn = self.writer().await?;
            let pattern = self.key("entry:*");
            let mut cursor: u64 = 0;
            let mut out = Vec::new();
            loop {
                let (next, keys): (u64, Vec<String>) = io(redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn))
                .await?;
                if !keys.is_empty() {
                    let values: Vec<Option<String>> =
                        io(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
                    out.extend(
                        values
                            .into_iter()
                            .flatten()
                            .filter_map(|v| serde_json::from_str(&v).ok()),
                    );
                }
                cursor = next;
                if cursor == 0 {
                    return Ok(out);
                }
            }
        }
        .await
    }
}

/// Reconnects forever with jittered exponential backoff; each session loads everything, then
/// follows the announcements until an error.
async fn sync_loop(weak: Weak<RedisDenylist>) {
    let mut backoff = MIN_BACKOFF;
    let mut failures: u32 = 0;
    loop {
        let Some(source) = weak.upgrade() else { return };
        let session = source.resync().await;
        match session {
            Ok((stream, conn)) => {
                if failures > 0 {
                    tracing::info!(redis = %source.settings.display, entries = source.list.len(), "revocation list resynchronised with Redis");
                } else {
                    tracing::info!(redis = %source.settings.display, entries = source.list.len(), "revocation list loaded from Redis");
                }
                failures = 0;
                backoff = MIN_BACKOFF;
                drop(source);
                let ended = follow(&weak, stream, conn).await;
                let Some(source) = weak.upgrade() else { return };
                source.set_connected(false);
                tracing::warn!(redis = %source.settings.display, error = %ended, "lost the revocation list's Redis connection; enforcing the list held in memory and reconnecting");
                drop(source);
            }
            Err(error) => {
                source.set_connected(false);
                failures += 1;
                // The first failure and then one in twelve at warn: the outage is visible in
                // the logs without a line per attempt.
                if failures == 1 || failures % 12 == 0 {
                    tracing::warn!(redis = %source.settings.display, %error, failures, "cannot synchronise the revocation list with Redis; enforcing the list held in memory and retrying");
                } else {
                    tracing::debug!(redis = %source.settings.display, %error, failures, "revocation Redis retry failed");
                }
                // Not held through the backoff: a source nobody owns any more ends its loop.
                drop(source);
            }
        }
        let mut jitter = [0u8; 1];
        let _ = aws_lc_rs::rand::fill(&mut jitter);
        let sleep = backoff + backoff.mul_f64(f64::from(jitter[0]) / 512.0);
        tokio::time::sleep(sleep).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Follows one session: announcements as they arrive (in batches, published once), the marker
/// every heartbeat. Returns why it ended.
async fn follow(
    weak: &Weak<RedisDenylist>,
    mut stream: redis::aio::PubSubStream,
    mut conn: MultiplexedConnection,
) -> RedisSourceError {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut last_compact = tokio::time::Instant::now();
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return RedisSourceError::SubscriptionClosed };
                let mut payloads: Vec<String> = message.get_payload().into_iter().collect();
                // Whatever else is already queued goes into the same batch.
                while let Some(Some(more)) = stream.next().now_or_never() {
                    payloads.extend(more.get_payload::<String>());
                    if payloads.len() >= 1024 {
                        break;
                    }
                }
                let Some(source) = weak.upgrade() else { return RedisSourceError::SubscriptionClosed };
                source.apply_announcements(&payloads);
            }
            _ = heartbeat.tick() => {
                let Some(source) = weak.upgrade() else { return RedisSourceError::SubscriptionClosed };
                match source.epoch_unchanged(&mut conn).await {
                    Ok(true) => source.mark_ok(),
                    Ok(false) => return RedisSourceError::EpochChanged,
                    Err(error) => return error,
                }
                if last_compact.elapsed() >= COMPACT_EVERY {
                    last_compact = tokio::time::Instant::now();
                    source.list.compact(now_unix());
                }
            }
        }
    }
}
