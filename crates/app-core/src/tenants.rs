//! The tenant registry: the tenants of `TENANT_ID`/`LANEWAY_TENANTS` (static, always enabled) plus
//! the ones added at run time through the admin API, each with its data directory, its limits and
//! its API keys. Dynamic tenants and all keys are persisted in SQLite at
//! `DATA_DIR/_system/tenants.db` (in every mode: the registry is local configuration, even when
//! the jobs live in Redis).
//!
//! Every check runs before anything is written, so a refused request leaves the file, the
//! in-memory table and the data directories as they were. Requests read the table through a
//! `RwLock` taken only for a lookup; writers serialise on their own mutex, so a slow fsync never
//! holds up another tenant's request.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use queue_core::{LimitCaps, Mode, TenantId};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::settings::Settings;
use crate::wiring::{TenantPlan, tenant_data_dir};

/// Where the registry lives, relative to `DATA_DIR`.
pub const REGISTRY_PATH: &str = "_system/tenants.db";
/// Tenants listed per page when the request does not say.
pub const DEFAULT_PAGE_LIMIT: usize = 50;
/// Most tenants listed per page.
pub const MAX_PAGE_LIMIT: usize = 500;
/// What every issued key starts with, so a leaked one is easy to recognise (and to grep for).
pub const KEY_PREFIX: &str = "lwk_";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    id            TEXT PRIMARY KEY NOT NULL,
    data_dir      TEXT,
    enabled       INTEGER NOT NULL,
    limits        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id        TEXT PRIMARY KEY NOT NULL,
    tenant        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant, key_id);
";

/// Per-tenant capacities of capped work. A missing value means the setting's default
/// (`LLM_MAX_CONCURRENCY`, ...); a given one must be at least 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// `llm` permits (any LLM call).
    #[serde(default)]
    pub llm: Option<u32>,
    /// `llm_student` permits.
    #[serde(default)]
    pub llm_student: Option<u32>,
    /// `llm_teacher` permits.
    #[serde(default)]
    pub llm_teacher: Option<u32>,
    /// `ocr` permits.
    #[serde(default)]
    pub ocr: Option<u32>,
}

impl TenantLimits {
    fn named(&self) -> [(&'static str, Option<u32>); 4] {
        [
            ("llm", self.llm),
            ("llm_student", self.llm_student),
            ("llm_teacher", self.llm_teacher),
            ("ocr", self.ocr),
        ]
    }

    /// Every given limit is at least 1.
    ///
    /// # Errors
    /// `BadRequest` naming `limits.<class>`.
    pub fn validate(&self) -> Result<(), AppError> {
        for (name, value) in self.named() {
            if value == Some(0) {
                return Err(AppError::bad(
                    format!("limits.{name}"),
                    "must be at least 1 (or left out for the default)",
                ));
            }
        }
        Ok(())
    }

    /// The capacities these limits give over `defaults`.
    #[must_use]
    pub fn caps(&self, defaults: LimitCaps) -> LimitCaps {
        let or = |v: Option<u32>, d: usize| v.map_or(d, |n| usize::try_from(n).unwrap_or(usize::MAX));
        LimitCaps {
            ocr: or(self.ocr, defaults.ocr),
            llm: or(self.llm, defaults.llm),
            llm_student: or(self.llm_student, defaults.llm_student),
            llm_teacher: or(self.llm_teacher, defaults.llm_teacher),
        }
    }
}

/// The body of `PUT /admin/tenants/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    /// Where its files live; default `DATA_DIR/tenants/{id}`. Must lie under
    /// `TENANT_DATA_BASE_DIR` when that is set.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// Whether it runs.
    pub enabled: bool,
    /// Its capacities; each missing one is the setting's default.
    #[serde(default)]
    pub limits: TenantLimits,
}

/// A dynamic tenant as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// The tenant.
    pub id: TenantId,
    /// Its data directory as given (normalised), `None` for the default.
    pub data_dir: Option<PathBuf>,
    /// Whether it runs.
    pub enabled: bool,
    /// Its limits.
    pub limits: TenantLimits,
    /// When it was created.
    pub created_at_ms: u64,
    /// When it last changed.
    pub updated_at_ms: u64,
}

/// Where a tenant comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantSource {
    /// `TENANT_ID` or `LANEWAY_TENANTS`: always enabled, cannot be changed through the API.
    Env,
    /// Added through the admin API.
    Registry,
}

/// One tenant as the process knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantEntry {
    /// Where it comes from.
    pub source: TenantSource,
    /// Its configuration (for an env tenant: enabled, default limits and data dir, time 0).
    pub record: TenantRecord,
    /// Its effective data directory, absolute and normalised.
    pub data_dir: PathBuf,
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantView {
    /// The tenant.
    pub id: String,
    /// `env` or `registry`.
    pub source: TenantSource,
    /// Whether it should run.
    pub enabled: bool,
    /// Whether its runtime runs in this process now.
    pub running: bool,
    /// Its effective data directory.
    pub data_dir: String,
    /// Its limits as configured (`null`: the setting's default).
    pub limits: TenantLimits,
    /// The capacities its limiter runs with.
    pub effective_limits: LimitCaps,
    /// When it was added (registry tenants).
    pub created_at_ms: Option<u64>,
    /// When it last changed (registry tenants).
    pub updated_at_ms: Option<u64>,
}

impl TenantView {
    /// The view of `entry`, over the `defaults` capacities.
    #[must_use]
    pub fn new(entry: &TenantEntry, running: bool, defaults: LimitCaps) -> Self {
        let registry = entry.source == TenantSource::Registry;
        Self {
            id: entry.record.id.to_string(),
            source: entry.source,
            enabled: entry.record.enabled,
            running,
            data_dir: entry.data_dir.display().to_string(),
            limits: entry.record.limits,
            effective_limits: entry.record.limits.caps(defaults),
            created_at_ms: registry.then_some(entry.record.created_at_ms),
            updated_at_ms: registry.then_some(entry.record.updated_at_ms),
        }
    }
}

/// One page of `GET /admin/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantPage {
    /// The tenants, by id.
    pub tenants: Vec<TenantView>,
    /// Pass as `?after=` for the next page; `null` on the last one.
    pub next_after: Option<String>,
}

/// A freshly issued API key: the only time the key itself is shown.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct IssuedKey {
    /// Its id, for revoking it.
    pub key_id: String,
    /// Its tenant.
    pub tenant: String,
    /// The key (`lwk_...`); only its SHA-256 is stored.
    pub key: String,
    /// When it was issued.
    pub created_at_ms: u64,
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key_id", &self.key_id)
            .field("tenant", &self.tenant)
            .field("key", &"***")
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

/// An API key's record, without the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyView {
    /// Its id.
    pub key_id: String,
    /// Its tenant.
    pub tenant: String,
    /// When it was issued.
    pub created_at_ms: u64,
    /// When it was revoked, if it was.
    pub revoked_at_ms: Option<u64>,
}

/// What a presented tenant key turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// A live key of the tenant asked for.
    Valid {
        /// Which key (safe to log).
        key_id: String,
    },
    /// A live key, of another tenant.
    WrongTenant,
    /// A key that was revoked.
    Revoked,
    /// No such key.
    Unknown,
}

/// What `PUT /admin/tenants/{id}` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The entry before, if the tenant existed.
    pub previous: Option<TenantEntry>,
    /// The entry now.
    pub entry: TenantEntry,
    /// Whether anything changed (a replace with the same content writes nothing).
    pub changed: bool,
}

fn storage(what: &str, e: &dyn fmt::Display) -> AppError {
    AppError::Internal(format!("tenant registry: {what}: {e}"))
}

fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn sql_to_ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The SQLite file behind the registry.
struct RegistryDb {
    conn: Mutex<Connection>,
}

impl RegistryDb {
    fn open(path: &Path) -> Result<Self, AppError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| storage(&format!("cannot create {}", parent.display()), &e))?;
        }
        let conn =
            Connection::open(path).map_err(|e| storage(&format!("cannot open {}", path.display()), &e))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| storage("cannot configure", &e))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| storage("cannot configure", &e))?;
        // Admin writes are rare and must survive a crash.
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| storage("cannot configure", &e))?;
        Self::with_schema(conn)
    }

    fn in_memory() -> Result<Self, AppError> {
        Self::with_schema(Connection::open_in_memory().map_err(|e| storage("cannot open in memory", &e))?)
    }

    fn with_schema(conn: Connection) -> Result<Self, AppError> {
        conn.execute_batch(SCHEMA).map_err(|e| storage("cannot create the schema", &e))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every statement is its own transaction: a poisoned lock leaves nothing half-written.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn load(&self) -> Result<Vec<TenantRecord>, AppError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, data_dir, enabled, limits, created_at_ms, updated_at_ms FROM tenants ORDER BY id",
            )
            .map_err(|e| storage("cannot read tenants", &e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, bool>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })
            .map_err(|e| storage("cannot read tenants", &e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, data_dir, enabled, limits, created, updated) =
                row.map_err(|e| storage("cannot read tenants", &e))?;
            let id = TenantId::new(&id).map_err(|e| storage(&format!("bad tenant id {id:?}"), &e))?;
            let limits: TenantLimits =
                serde_json::from_str(&limits).map_err(|e| storage(&format!("bad limits of {id}"), &e))?;
            out.push(TenantRecord {
                id,
                data_dir: data_dir.map(PathBuf::from),
                enabled,
                limits,
                created_at_ms: sql_to_ms(created),
                updated_at_ms: sql_to_ms(updated),
            });
        }
        Ok(out)
    }

    fn put(&self, record: &TenantRecord) -> Result<(), AppError> {
        let limits =
            serde_json::to_string(&record.limits).map_err(|e| storage("cannot encode limits", &e))?;
        let data_dir = match &record.data_dir {
            None => None,
            Some(d) => {
                Some(d.to_str().ok_or_else(|| AppError::bad("data_dir", "must be valid UTF-8"))?.to_owned())
            }
        };
        self.conn()
            .execute(
                "INSERT INTO tenants (id, data_dir, enabled, limits, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET data_dir = excluded.data_dir, enabled = excluded.enabled,
                   limits = excluded.limits, updated_at_ms = excluded.updated_at_ms",
                params![
                    record.id.as_str(),
                    data_dir,
                    record.enabled,
                    limits,
                    ms_to_sql(record.created_at_ms),
                    ms_to_sql(record.updated_at_ms)
                ],
            )
            .map_err(|e| storage("cannot write the tenant", &e))?;
        Ok(())
    }

    fn delete(&self, id: &TenantId) -> Result<(), AppError> {
        self.conn()
            .execute("DELETE FROM tenants WHERE id = ?1", params![id.as_str()])
            .map_err(|e| storage("cannot delete the tenant", &e))?;
        Ok(())
    }

    fn insert_key(&self, key_id: &str, tenant: &TenantId, hash: &str, now: u64) -> Result<(), AppError> {
        self.conn()
            .execute(
                "INSERT INTO api_keys (key_id, tenant, hash, created_at_ms, revoked_at_ms) VALUES (?1, ?2, ?3, ?4, NULL)",
                params![key_id, tenant.as_str(), hash, ms_to_sql(now)],
            )
            .map_err(|e| storage("cannot store the key", &e))?;
        Ok(())
    }

    /// (tenant, key id, revoked) of the key with this hash.
    fn key_by_hash(&self, hash: &str) -> Result<Option<(String, String, bool)>, AppError> {
        self.conn()
            .query_row(
                "SELECT tenant, key_id, revoked_at_ms IS NOT NULL FROM api_keys WHERE hash = ?1",
                params![hash],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(|e| storage("cannot look the key up", &e))
    }

    /// Revokes the key (once: a second revoke keeps the first time); its view and hash.
    fn revoke(
        &self,
        tenant: &TenantId,
        key_id: &str,
        now: u64,
    ) -> Result<Option<(KeyView, String)>, AppError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE api_keys SET revoked_at_ms = ?3 WHERE tenant = ?1 AND key_id = ?2 AND revoked_at_ms IS NULL",
            params![tenant.as_str(), key_id, ms_to_sql(now)],
        )
        .map_err(|e| storage("cannot revoke the key", &e))?;
        conn.query_row(
            "SELECT key_id, tenant, created_at_ms, revoked_at_ms, hash FROM api_keys WHERE tenant = ?1 AND key_id = ?2",
            params![tenant.as_str(), key_id],
            |row| {
                Ok((
                    KeyView {
                        key_id: row.get(0)?,
                        tenant: row.get(1)?,
                        created_at_ms: sql_to_ms(row.get(2)?),
                        revoked_at_ms: row.get::<_, Option<i64>>(3)?.map(sql_to_ms),
                    },
                    row.get(4)?,
                ))
            },
        )
        .optional()
        .map_err(|e| storage("cannot read the key", &e))
    }
}

/// What the key cache remembers of one key (by hash).
#[derive(Debug, Clone)]
struct CachedKey {
    tenant: String,
    key_id: String,
    revoked: bool,
}

/// Looked-up keys by hash. Only keys that exist are cached (an unknown key costs a lookup, so
/// random guesses cannot grow the cache). `generation` moves on every revoke, so a lookup that
/// raced a revoke never caches the key as live.
#[derive(Debug, Default)]
struct KeyCache {
    generation: u64,
    by_hash: HashMap<String, CachedKey>,
}

/// The tenants of this process, and their keys.
pub struct TenantDirectory {
    db: RegistryDb,
    data_root: PathBuf,
    system_dir: PathBuf,
    base_dir: Option<PathBuf>,
    entries: RwLock<BTreeMap<TenantId, TenantEntry>>,
    /// Serialises writers (check, write, publish), so two tenants cannot claim one directory.
    commit: Mutex<()>,
    keys: RwLock<KeyCache>,
    gates: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    random: SystemRandom,
}

impl fmt::Debug for TenantDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantDirectory")
            .field("data_root", &self.data_root)
            .field("base_dir", &self.base_dir)
            .field("tenants", &self.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TenantDirectory {
    /// The directory of `settings`: the env tenants, and the registry at
    /// `DATA_DIR/_system/tenants.db` (in memory for `Mode::Test`). A registry tenant that is
    /// also an env tenant is served as the env tenant.
    ///
    /// # Errors
    /// `Internal` when the registry cannot be opened or read.
    pub fn open(settings: &Settings, mode: Mode) -> Result<Self, AppError> {
        let db = match mode {
            Mode::Test => RegistryDb::in_memory()?,
            Mode::Inline | Mode::Redis => RegistryDb::open(&settings.data_dir.join(REGISTRY_PATH))?,
        };
        let normalise =
            |p: &Path| normalise_path(p).map_err(|e| storage(&format!("cannot resolve {}", p.display()), &e));
        let data_root = normalise(&settings.data_dir)?;
        let system_dir = data_root.join("_system");
        let base_dir = settings.tenant_data_base_dir.as_deref().map(normalise).transpose()?;
        let mut entries = BTreeMap::new();
        for id in settings.tenants() {
            let record = TenantRecord {
                id: id.clone(),
                data_dir: None,
                enabled: true,
                limits: TenantLimits::default(),
                created_at_ms: 0,
                updated_at_ms: 0,
            };
            let data_dir = normalise(&tenant_data_dir(settings, &id))?;
            entries.insert(id, TenantEntry { source: TenantSource::Env, record, data_dir });
        }
        for record in db.load()? {
            if entries.contains_key(&record.id) {
                tracing::warn!(tenant = %record.id, "tenant is in the registry and in TENANT_ID/LANEWAY_TENANTS: serving it as configured by the environment");
                continue;
            }
            let data_dir = match &record.data_dir {
                Some(d) => d.clone(),
                None => normalise(&tenant_data_dir(settings, &record.id))?,
            };
            entries
                .insert(record.id.clone(), TenantEntry { source: TenantSource::Registry, record, data_dir });
        }
        Ok(Self {
            db,
            data_root,
            system_dir,
            base_dir,
            entries: RwLock::new(entries),
            commit: Mutex::new(()),
            keys: RwLock::new(KeyCache::default()),
            gates: Mutex::new(HashMap::new()),
            random: SystemRandom::new(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<TenantId, TenantEntry>> {
        // Each write is one insert: a poisoned lock still holds a consistent map.
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, entry: TenantEntry) {
        self.entries.write().unwrap_or_else(PoisonError::into_inner).insert(entry.record.id.clone(), entry);
    }

    /// The tenant, if known.
    #[must_use]
    pub fn entry(&self, id: &TenantId) -> Option<TenantEntry> {
        self.read().get(id).cloned()
    }

    /// Whether the tenant is enabled; `None` when it is unknown.
    #[must_use]
    pub fn enabled(&self, id: &TenantId) -> Option<bool> {
        self.read().get(id).map(|e| e.record.enabled)
    }

    /// Every tenant, by id.
    #[must_use]
    pub fn entries(&self) -> Vec<TenantEntry> {
        self.read().values().cloned().collect()
    }

    /// Enabled tenants of `source`, by id.
    #[must_use]
    pub fn enabled_ids(&self, source: TenantSource) -> Vec<TenantId> {
        self.read()
            .values()
            .filter(|e| e.source == source && e.record.enabled)
            .map(|e| e.record.id.clone())
            .collect()
    }

    /// One page of tenants after `after` (exclusive), and the cursor of the next page.
    #[must_use]
    pub fn page(&self, limit: usize, after: Option<&TenantId>) -> (Vec<TenantEntry>, Option<TenantId>) {
        let map = self.read();
        let range = match after {
            Some(a) => map.range::<TenantId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => map.range::<TenantId, _>(..),
        };
        let mut items: Vec<TenantEntry> =
            range.take(limit.saturating_add(1)).map(|(_, e)| e.clone()).collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.record.id.clone())
        } else {
            None
        };
        (items, next)
    }

    /// How to build the tenant: its data directory and capacities over `defaults`.
    ///
    /// # Errors
    /// `NotFound` for an unknown tenant; `BadRequest` (`data_dir`) for a registry tenant whose
    /// directory no longer lies under `TENANT_DATA_BASE_DIR`.
    pub fn plan(&self, id: &TenantId, defaults: LimitCaps) -> Result<TenantPlan, AppError> {
        let entry = self.entry(id).ok_or_else(|| AppError::NotFound(format!("unknown tenant {id}")))?;
        if entry.source == TenantSource::Registry {
            self.check_under_base(&entry.data_dir)?;
        }
        Ok(TenantPlan { data_dir: entry.data_dir, caps: entry.record.limits.caps(defaults) })
    }

    /// The per-tenant gate that serialises admin changes of one tenant (held across its
    /// runtime's restart, which is why it is async).
    #[must_use]
    pub fn gate(&self, id: &TenantId) -> Arc<tokio::sync::Mutex<()>> {
        self.gates.lock().unwrap_or_else(PoisonError::into_inner).entry(id.clone()).or_default().clone()
    }

    fn check_under_base(&self, dir: &Path) -> Result<(), AppError> {
        if let Some(base) = &self.base_dir
            && (!dir.starts_with(base) || dir == base)
        {
            return Err(AppError::bad(
                "data_dir",
                format!(
                    "must lie inside TENANT_DATA_BASE_DIR ({}); {} does not",
                    base.display(),
                    dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// The effective data directory `given` names for `id`, once it passes every rule: no `..`,
    /// inside `TENANT_DATA_BASE_DIR` when set, apart from the registry's own directory and from
    /// every other tenant's directory. Returns it with the normalised form to store (`None` for
    /// the default).
    fn resolve_data_dir(
        &self,
        id: &TenantId,
        given: Option<&str>,
    ) -> Result<(PathBuf, Option<PathBuf>), AppError> {
        let (dir, stored) = match given {
            Some(raw) => {
                if raw.trim().is_empty() {
                    return Err(AppError::bad(
                        "data_dir",
                        "must not be empty (leave it out for the default)",
                    ));
                }
                if raw.contains('\0') {
                    return Err(AppError::bad("data_dir", "must not contain a NUL byte"));
                }
                let path = Path::new(raw);
                if path.components().any(|c| matches!(c, Component::ParentDir)) {
                    return Err(AppError::bad("data_dir", "must not contain `..` components"));
                }
                let dir = normalise_path(path)
                    .map_err(|e| AppError::bad("data_dir", format!("cannot be resolved: {e}")))?;
                (dir.clone(), Some(dir))
            }
            None => {
                let default = self.data_root.join("tenants").join(id.as_str());
                let dir = normalise_path(&default)
                    .map_err(|e| AppError::bad("data_dir", format!("cannot be resolved: {e}")))?;
                (dir, None)
            }
        };
        self.check_under_base(&dir)?;
        let overlaps = |other: &Path| dir.starts_with(other) || other.starts_with(&dir);
        if overlaps(&self.system_dir) {
            return Err(AppError::bad(
                "data_dir",
                format!("must not overlap the registry's directory {}", self.system_dir.display()),
            ));
        }
        for entry in self.read().values() {
            if &entry.record.id != id && overlaps(&entry.data_dir) {
                return Err(AppError::bad(
                    "data_dir",
                    format!(
                        "{} overlaps the data directory of tenant {} ({}); tenants' directories must be disjoint",
                        dir.display(),
                        entry.record.id,
                        entry.data_dir.display()
                    ),
                ));
            }
        }
        Ok((dir, stored))
    }

    /// Creates or replaces a registry tenant, after every check passed. Blocking (SQLite).
    ///
    /// # Errors
    /// `BadRequest` naming the field; `Conflict` for an env tenant; `Internal` when the
    /// registry cannot be written (nothing changes then).
    pub fn put(&self, id: &TenantId, req: &TenantRequest, now_ms: u64) -> Result<PutOutcome, AppError> {
        req.limits.validate()?;
        let _writer = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = self.entry(id);
        if previous.as_ref().is_some_and(|e| e.source == TenantSource::Env) {
            return Err(AppError::Conflict(format!(
                "tenant {id} is configured by TENANT_ID/LANEWAY_TENANTS and cannot be changed through the admin API"
            )));
        }
        let (data_dir, stored_dir) = self.resolve_data_dir(id, req.data_dir.as_deref())?;
        let record = TenantRecord {
            id: id.clone(),
            data_dir: stored_dir,
            enabled: req.enabled,
            limits: req.limits,
            created_at_ms: previous.as_ref().map_or(now_ms, |e| e.record.created_at_ms),
            updated_at_ms: now_ms,
        };
        let entry = TenantEntry { source: TenantSource::Registry, record, data_dir };
        if let Some(prev) = &previous {
            let same = prev.record.data_dir == entry.record.data_dir
                && prev.record.enabled == entry.record.enabled
                && prev.record.limits == entry.record.limits;
            if same {
                return Ok(PutOutcome { previous: previous.clone(), entry: prev.clone(), changed: false });
            }
        }
        self.db.put(&entry.record)?;
        self.publish(entry.clone());
        Ok(PutOutcome { previous, entry, changed: true })
    }

    /// Puts back what [`TenantDirectory::put`] replaced (`None`: removes the tenant), when the
    /// new configuration could not start. Blocking.
    ///
    /// # Errors
    /// `Internal` when the registry cannot be written.
    pub fn restore(&self, id: &TenantId, previous: Option<TenantEntry>) -> Result<(), AppError> {
        let _writer = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        match previous {
            Some(entry) => {
                self.db.put(&entry.record)?;
                self.publish(entry);
            }
            None => {
                self.db.delete(id)?;
                self.entries.write().unwrap_or_else(PoisonError::into_inner).remove(id);
            }
        }
        Ok(())
    }

    /// Disables a registry tenant (its data stays). Blocking. Returns the entry and whether it
    /// changed.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` for an env tenant; `Internal` when the registry cannot be
    /// written.
    pub fn disable(&self, id: &TenantId, now_ms: u64) -> Result<(TenantEntry, bool), AppError> {
        let _writer = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        let mut entry = self.entry(id).ok_or_else(|| AppError::NotFound(format!("unknown tenant {id}")))?;
        if entry.source == TenantSource::Env {
            return Err(AppError::Conflict(format!(
                "tenant {id} is configured by TENANT_ID/LANEWAY_TENANTS and cannot be deleted; remove it from the environment instead"
            )));
        }
        if !entry.record.enabled {
            return Ok((entry, false));
        }
        entry.record.enabled = false;
        entry.record.updated_at_ms = now_ms;
        self.db.put(&entry.record)?;
        self.publish(entry.clone());
        Ok((entry, true))
    }

    /// Issues a new key for a known tenant; only its hash is stored. Blocking.
    ///
    /// # Errors
    /// `NotFound`; `Internal` when no randomness is available or the registry cannot be
    /// written.
    pub fn issue_key(&self, id: &TenantId, now_ms: u64) -> Result<IssuedKey, AppError> {
        if self.entry(id).is_none() {
            return Err(AppError::NotFound(format!("unknown tenant {id}")));
        }
        let mut secret = [0u8; 32];
        let mut key_id = [0u8; 8];
        self.random
            .fill(&mut secret)
            .and_then(|()| self.random.fill(&mut key_id))
            .map_err(|_| AppError::Internal("no system randomness to make a key from".into()))?;
        let key = format!("{KEY_PREFIX}{}", hex(&secret));
        let key_id = format!("k{}", hex(&key_id));
        let _writer = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        self.db.insert_key(&key_id, id, &hash_key(&key), now_ms)?;
        Ok(IssuedKey { key_id, tenant: id.to_string(), key, created_at_ms: now_ms })
    }

    /// Revokes one of the tenant's keys (a second revoke changes nothing) and forgets it in
    /// the cache. Blocking.
    ///
    /// # Errors
    /// `BadRequest` (`key_id`) for a malformed id; `NotFound` for a key the tenant does not
    /// have; `Internal` when the registry cannot be written.
    pub fn revoke_key(&self, id: &TenantId, key_id: &str, now_ms: u64) -> Result<KeyView, AppError> {
        let well_formed = !key_id.is_empty()
            && key_id.len() <= 64
            && key_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(AppError::bad(
                "key_id",
                "must be 1-64 characters of [A-Za-z0-9_-] (as issued: k<16 hex>)",
            ));
        }
        let _writer = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        let (view, hash) = self
            .db
            .revoke(id, key_id, now_ms)?
            .ok_or_else(|| AppError::NotFound(format!("tenant {id} has no key {key_id}")))?;
        let mut cache = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        cache.generation += 1;
        cache.by_hash.remove(&hash);
        Ok(view)
    }

    /// What `key` is for `tenant`, from the cache alone (`None`: not cached, ask
    /// [`TenantDirectory::check_key`]). Never blocks on the database.
    #[must_use]
    pub fn check_key_cached(&self, tenant: &str, key: &str) -> Option<KeyCheck> {
        let hash = hash_key(key);
        let cache = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        cache.by_hash.get(&hash).map(|c| judge(c, tenant))
    }

    /// What `key` is for `tenant`: the cache, else the registry (and the answer is cached).
    /// Blocking on a cache miss.
    ///
    /// # Errors
    /// `Internal` when the registry cannot be read.
    pub fn check_key(&self, tenant: &str, key: &str) -> Result<KeyCheck, AppError> {
        let hash = hash_key(key);
        let generation = {
            let cache = self.keys.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = cache.by_hash.get(&hash) {
                return Ok(judge(c, tenant));
            }
            cache.generation
        };
        let Some((key_tenant, key_id, revoked)) = self.db.key_by_hash(&hash)? else {
            return Ok(KeyCheck::Unknown);
        };
        let found = CachedKey { tenant: key_tenant, key_id, revoked };
        let verdict = judge(&found, tenant);
        let mut cache = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if cache.generation == generation {
            cache.by_hash.insert(hash, found);
        }
        Ok(verdict)
    }
}

fn judge(key: &CachedKey, tenant: &str) -> KeyCheck {
    if key.revoked {
        KeyCheck::Revoked
    } else if key.tenant == tenant {
        KeyCheck::Valid { key_id: key.key_id.clone() }
    } else {
        KeyCheck::WrongTenant
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The SHA-256 of a key, in hex: what the registry stores and looks keys up by. Keys are 256
/// random bits, so an unsalted hash is enough and keeps the lookup a single indexed read.
#[must_use]
pub fn hash_key(key: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref())
}

/// An absolute, normalised form of `path`, so that two spellings of one directory compare equal
/// and a symlink cannot carry a path out of a base directory: a relative path is taken from the
/// current directory, `.` is dropped, `..` removes the component before it, and the longest
/// part that exists is canonicalised (symlinks resolved); the rest is appended as written.
///
/// # Errors
/// When the current directory cannot be read (relative paths only).
pub fn normalise_path(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    let mut lexical = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(mut resolved) = existing.canonicalize() {
            resolved.extend(rest.iter().rev());
            return Ok(resolved);
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return Ok(lexical),
        }
    }
}
