//! The durable store, one SQLite database in the data directory: each
//! plugin's key-value namespace and the operator's configuration values.
//! WAL with `synchronous=FULL`: a write that was answered survives a crash
//! of the host (and of the machine). Without a data directory the store is
//! in memory and nothing survives the host.

mod limits;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};

pub use limits::{KvLimits, KvLimitsBuilder};

/// The database's file name in the data directory.
pub(crate) const DATABASE_FILE: &str = "plugvisor.db";

/// Why the store cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the store {}: {reason}", path.display())]
#[non_exhaustive]
pub struct StoreError {
    /// The database file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Why a key-value call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KvError {
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("value of {size} bytes is over the limit of {limit} bytes per value")]
    ValueTooLarge { size: usize, limit: usize },
    #[error(
        "the plugin's store would hold {would} bytes, over its limit of {limit} bytes; delete keys first"
    )]
    QuotaExceeded { would: u64, limit: u64 },
    #[error("the store cannot be written: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for KvError {
    fn from(error: rusqlite::Error) -> Self {
        KvError::Unavailable(error.to_string())
    }
}

/// Most keys one List call returns.
pub(crate) const MAX_LIST_LIMIT: usize = 10_000;
const DEFAULT_LIST_LIMIT: usize = 1000;

#[derive(Clone)]
pub(crate) struct Store {
    connection: Arc<Mutex<Connection>>,
    limits: KvLimits,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kv (
        plugin TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
        PRIMARY KEY (plugin, key)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS kv_usage (
        plugin TEXT PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS config (
        plugin TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (plugin, key)) WITHOUT ROWID;
";

impl Store {
    /// Opens (or creates) `data_dir/plugvisor.db`; the directory is created 0700.
    pub(crate) fn open(data_dir: &Path, limits: KvLimits) -> Result<Store, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let failed = |reason: String| StoreError {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| failed(e.to_string()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed(format!("cannot make its directory private: {e}")))?;
        let connection = Connection::open(&path).map_err(|e| failed(e.to_string()))?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| connection.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| connection.busy_timeout(std::time::Duration::from_secs(5)))
            .and_then(|_| connection.execute_batch(SCHEMA))
            .map_err(|e| failed(e.to_string()))?;
        Ok(Store::with(connection, limits))
    }

    /// A store that lives as long as the host.
    pub(crate) fn in_memory(limits: KvLimits) -> Store {
        let connection = Connection::open_in_memory().expect("sqlite opens an in-memory database");
        connection
            .execute_batch(SCHEMA)
            .expect("the schema applies to an empty database");
        Store::with(connection, limits)
    }

    fn with(connection: Connection, limits: KvLimits) -> Store {
        Store {
            connection: Arc::new(Mutex::new(connection)),
            limits,
        }
    }

    /// Runs `work` on the connection off the async threads (SQLite blocks).
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut connection)
        })
        .await
        .map_err(|e| KvError::Unavailable(e.to_string()))?
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::InvalidKey("keys must not be empty".into()));
        }
        if key.len() > self.limits.max_key_bytes() {
            return Err(KvError::InvalidKey(format!(
                "{} bytes, over the limit of {} bytes per key",
                key.len(),
                self.limits.max_key_bytes()
            )));
        }
        if key.contains('\0') {
            return Err(KvError::InvalidKey("keys must not contain NUL".into()));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        let limit = self.limits.max_value_bytes();
        match value.len() > limit {
            true => Err(KvError::ValueTooLarge {
                size: value.len(),
                limit,
            }),
            false => Ok(()),
        }
    }

    pub(crate) async fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(key)?;
        let (plugin, key) = (plugin.to_string(), key.to_string());
        self.blocking(move |c| {
            Ok(
                c.prepare_cached("SELECT value FROM kv WHERE plugin = ?1 AND key = ?2")?
                    .query_row(params![plugin, key], |row| row.get(0))
                    .optional()?,
            )
        })
        .await
    }

    pub(crate) async fn set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.compare_and_set(plugin, key, Expect::Anything, Some(value))
            .await
            .map(drop)
    }

    /// Whether there was a value to delete.
    pub(crate) async fn delete(&self, plugin: &str, key: &str) -> Result<bool, KvError> {
        self.compare_and_set(plugin, key, Expect::Present, None)
            .await
    }

    /// Keys starting with `prefix`, after `start_after`, in byte order; and
    /// whether more follow.
    pub(crate) async fn list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<(Vec<String>, bool), KvError> {
        let limit = match limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let (plugin, prefix, start_after) = (
            plugin.to_string(),
            prefix.to_string(),
            start_after.to_string(),
        );
        self.blocking(move |c| {
            // TEXT compares bytewise, so the keys with a prefix are a run from the prefix on.
            let mut statement = c.prepare_cached(
                "SELECT key FROM kv WHERE plugin = ?1 AND key >= ?2 AND key > ?3 ORDER BY key LIMIT ?4",
            )?;
            let rows = statement.query_map(
                params![plugin, prefix, start_after, limit as i64 + 1],
                |row| row.get::<_, String>(0),
            )?;
            let mut keys = Vec::new();
            for key in rows {
                let key = key?;
                if !key.starts_with(&prefix) {
                    break;
                }
                keys.push(key);
            }
            let more = keys.len() > limit;
            keys.truncate(limit);
            Ok((keys, more))
        })
        .await
    }

    /// Sets (or, with `value` None, deletes) the key if its current value is
    /// what `expected` says; true when it did.
    pub(crate) async fn compare_and_set(
        &self,
        plugin: &str,
        key: &str,
        expected: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<bool, KvError> {
        self.check_key(key)?;
        if let Some(value) = &value {
            self.check_value(value)?;
        }
        let limit = self.limits.max_plugin_bytes();
        let (plugin, key) = (plugin.to_string(), key.to_string());
        self.blocking(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<Vec<u8>> = tx
                .prepare_cached("SELECT value FROM kv WHERE plugin = ?1 AND key = ?2")?
                .query_row(params![plugin, key], |row| row.get(0))
                .optional()?;
            if !expected.matches(current.as_deref()) {
                return Ok(false);
            }
            let entry = |v: &[u8]| (key.len() + v.len()) as i64;
            let delta = value.as_deref().map_or(0, entry) - current.as_deref().map_or(0, entry);
            let used: i64 = tx
                .prepare_cached("SELECT bytes FROM kv_usage WHERE plugin = ?1")?
                .query_row(params![plugin], |row| row.get(0))
                .optional()?
                .unwrap_or(0);
            let would = (used + delta).max(0) as u64;
            if delta > 0 && would > limit {
                return Err(KvError::QuotaExceeded { would, limit });
            }
            match &value {
                Some(value) => tx
                    .prepare_cached(
                        "INSERT INTO kv (plugin, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![plugin, key, value])?,
                None => tx
                    .prepare_cached("DELETE FROM kv WHERE plugin = ?1 AND key = ?2")?
                    .execute(params![plugin, key])?,
            };
            tx.prepare_cached(
                "INSERT INTO kv_usage (plugin, bytes) VALUES (?1, ?2)
                 ON CONFLICT (plugin) DO UPDATE SET bytes = excluded.bytes",
            )?
            .execute(params![plugin, would as i64])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// The operator's configuration values of a plugin (`plugvisor config set`).
    pub(crate) fn config_values(&self, plugin: &str) -> Result<Map<String, Value>, KvError> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let mut statement =
            connection.prepare_cached("SELECT key, value FROM config WHERE plugin = ?1")?;
        let rows = statement.query_map(params![plugin], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut values = Map::new();
        for row in rows {
            let (key, text) = row?;
            let value = serde_json::from_str(&text)
                .map_err(|e| KvError::Unavailable(format!("stored value of {key}: {e}")))?;
            values.insert(key, value);
        }
        Ok(values)
    }

    /// Sets (`Some`) or removes (`None`) configuration values, all or none.
    pub(crate) fn set_config_values(
        &self,
        plugin: &str,
        changes: &[(String, Option<Value>)],
    ) -> Result<(), KvError> {
        let mut connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let tx = connection.transaction()?;
        for (key, value) in changes {
            match value {
                Some(value) => tx.execute(
                    "INSERT INTO config (plugin, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                    params![plugin, key, value.to_string()],
                )?,
                None => tx.execute(
                    "DELETE FROM config WHERE plugin = ?1 AND key = ?2",
                    params![plugin, key],
                )?,
            };
        }
        tx.commit()?;
        Ok(())
    }
}

/// What compare-and-set expects the key to hold now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    Anything,
    Present,
    Absent,
    Value(Vec<u8>),
}

impl Expect {
    fn matches(&self, current: Option<&[u8]>) -> bool {
        match (self, current) {
            (Expect::Anything, _) => true,
            (Expect::Present, current) => current.is_some(),
            (Expect::Absent, current) => current.is_none(),
            (Expect::Value(expected), Some(current)) => expected.as_slice() == current,
            (Expect::Value(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Store {
        let limits = KvLimits::builder()
            .max_key_bytes(8)
            .max_value_bytes(16)
            .max_plugin_bytes(40)
            .build()
            .unwrap();
        Store::in_memory(limits)
    }

    #[tokio::test]
    async fn namespaces_are_separate() {
        let store = small();
        store.set("a", "k", b"one".to_vec()).await.unwrap();
        store.set("b", "k", b"two".to_vec()).await.unwrap();
        assert_eq!(store.get("a", "k").await.unwrap().unwrap(), b"one");
        assert_eq!(store.get("b", "k").await.unwrap().unwrap(), b"two");
        assert!(store.delete("a", "k").await.unwrap());
        assert!(!store.delete("a", "k").await.unwrap());
        assert_eq!(store.get("b", "k").await.unwrap().unwrap(), b"two");
    }

    #[tokio::test]
    async fn list_pages_through_a_prefix_in_byte_order() {
        let store = Store::in_memory(KvLimits::default());
        for key in ["b/2", "a/1", "b/1", "b/3", "c", "b0"] {
            store.set("p", key, vec![1]).await.unwrap();
        }
        let (page, more) = store.list("p", "b/", "", 2).await.unwrap();
        assert_eq!(page, ["b/1", "b/2"]);
        assert!(more);
        let (page, more) = store.list("p", "b/", "b/2", 2).await.unwrap();
        assert_eq!(page, ["b/3"]);
        assert!(!more);
        let (all, _) = store.list("p", "", "", 0).await.unwrap();
        assert_eq!(all, ["a/1", "b/1", "b/2", "b/3", "b0", "c"]);
    }

    #[tokio::test]
    async fn compare_and_set_changes_only_what_it_expects() {
        let store = small();
        let cas = |expected, value: Option<&[u8]>| {
            store.compare_and_set("p", "k", expected, value.map(<[u8]>::to_vec))
        };
        assert!(cas(Expect::Absent, Some(b"1")).await.unwrap());
        assert!(!cas(Expect::Absent, Some(b"2")).await.unwrap());
        assert!(!cas(Expect::Value(b"0".to_vec()), Some(b"2")).await.unwrap());
        assert!(cas(Expect::Value(b"1".to_vec()), Some(b"2")).await.unwrap());
        assert_eq!(store.get("p", "k").await.unwrap().unwrap(), b"2");
        assert!(cas(Expect::Value(b"2".to_vec()), None).await.unwrap());
        assert_eq!(store.get("p", "k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn limits_are_enforced_with_clear_errors() {
        let store = small();
        let long_key = store.set("p", "123456789", vec![]).await.unwrap_err();
        assert!(
            long_key.to_string().contains("limit of 8 bytes per key"),
            "{long_key}"
        );
        let big = store.set("p", "k", vec![0; 17]).await.unwrap_err();
        assert_eq!(
            big,
            KvError::ValueTooLarge {
                size: 17,
                limit: 16
            }
        );
        assert!(matches!(
            store.set("p", "", vec![]).await,
            Err(KvError::InvalidKey(_))
        ));
        // 40 bytes in all: two keys of 1 + 16 fit, a third does not.
        store.set("p", "a", vec![0; 16]).await.unwrap();
        store.set("p", "b", vec![0; 16]).await.unwrap();
        let full = store.set("p", "c", vec![0; 16]).await.unwrap_err();
        assert_eq!(
            full,
            KvError::QuotaExceeded {
                would: 51,
                limit: 40
            }
        );
        // Overwriting with a smaller value, and deleting, free room.
        store.set("p", "a", vec![0; 1]).await.unwrap();
        store.set("p", "c", vec![0; 16]).await.unwrap();
        assert!(store.delete("p", "b").await.unwrap());
        store.set("p", "d", vec![0; 16]).await.unwrap();
        // Another plugin has its own quota.
        store.set("q", "a", vec![0; 16]).await.unwrap();
    }

    #[test]
    fn a_store_in_a_data_dir_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        {
            let store = Store::open(&data, KvLimits::default()).unwrap();
            runtime
                .block_on(store.set("p", "k", b"kept".to_vec()))
                .unwrap();
            store
                .set_config_values("p", &[("greeting".into(), Some(Value::from("hi")))])
                .unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let store = Store::open(&data, KvLimits::default()).unwrap();
        assert_eq!(
            runtime.block_on(store.get("p", "k")).unwrap().unwrap(),
            b"kept"
        );
        assert_eq!(store.config_values("p").unwrap()["greeting"], "hi");
        store
            .set_config_values("p", &[("greeting".into(), None)])
            .unwrap();
        assert!(store.config_values("p").unwrap().is_empty());
    }
}
