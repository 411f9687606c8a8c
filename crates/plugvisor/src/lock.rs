//! The lock file (`plugvisor.lock`): the sha256 of every file each plugin
//! runs, written by `plugvisor lock` and checked at every start.
//!
//! The format is JSON, pretty-printed with keys in sorted order, so a re-lock
//! that changes nothing rewrites the same bytes and a diff shows what moved:
//!
//! ```json
//! {
//!   "lock_version": 1,
//!   "plugins": {
//!     "hello-python": {
//!       "files": {
//!         "plugin.py": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!       },
//!       "interpreter": {
//!         "path": "/srv/plugins/hello-python/venv/bin/python",
//!         "sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! `files` maps each bundle-relative path the plugin runs (its executable, or
//! a Python plugin's script) to its sha256; `interpreter` is the Python
//! interpreter the launch plan found, whose content is pinned too (its path is
//! for people: a different path with the same content passes).
//! Everything here is pure: reading and hashing are the caller's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;

/// The lock file's name in a plugins directory.
pub const LOCK_FILE: &str = "plugvisor.lock";

/// The only `lock_version` this plugvisor reads and writes.
const LOCK_VERSION: u32 = 1;

/// A lock file's content: plugin id → what it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Lock {
    lock_version: u32,
    /// Each plugin's pinned files, by plugin id.
    pub plugins: BTreeMap<String, LockedPlugin>,
}

/// What one plugin runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LockedPlugin {
    /// Bundle-relative path → sha256.
    pub files: BTreeMap<String, Sha256>,
    /// A Python plugin's interpreter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<LockedInterpreter>,
}

/// A Python plugin's interpreter as it was locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LockedInterpreter {
    /// Where the lookup found it when the lock was written.
    pub path: PathBuf,
    /// Its content's sha256.
    pub sha256: Sha256,
}

/// A lock file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum LockError {
    #[error(
        "invalid lock file at line {line}, column {column}: {message}; rewrite it with `plugvisor lock`"
    )]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "lock_version {found} is not supported (this plugvisor reads {LOCK_VERSION}); rewrite it with `plugvisor lock`"
    )]
    Version { found: u32 },
}

impl Lock {
    /// An empty lock.
    pub fn new() -> Lock {
        Lock {
            lock_version: LOCK_VERSION,
            plugins: BTreeMap::new(),
        }
    }

    /// Parses a lock file's text.
    pub fn parse(text: &str) -> Result<Lock, LockError> {
        let lock: Lock = serde_json::from_str(text).map_err(|e| LockError::Json {
            line: e.line(),
            column: e.column(),
            message: crate::manifest::strip_position(&e.to_string()),
        })?;
        if lock.lock_version != LOCK_VERSION {
            return Err(LockError::Version {
                found: lock.lock_version,
            });
        }
        Ok(lock)
    }

    /// The file's text: pretty JSON in sorted order, ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a lock always serializes");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    fn sample() -> Lock {
        let mut lock = Lock::new();
        let mut python = LockedPlugin::default();
        python.files.insert("plugin.py".into(), A.parse().unwrap());
        python.interpreter = Some(LockedInterpreter {
            path: "/b/venv/bin/python".into(),
            sha256: B.parse().unwrap(),
        });
        lock.plugins.insert("zeta-python".into(), python);
        let mut native = LockedPlugin::default();
        native
            .files
            .insert("server/dist/plugin-linux-amd64".into(), B.parse().unwrap());
        lock.plugins.insert("alpha-go".into(), native);
        lock
    }

    #[test]
    fn the_text_is_stable_sorted_and_round_trips() {
        let text = sample().to_text();
        let expected = format!(
            r#"{{
  "lock_version": 1,
  "plugins": {{
    "alpha-go": {{
      "files": {{
        "server/dist/plugin-linux-amd64": "{B}"
      }}
    }},
    "zeta-python": {{
      "files": {{
        "plugin.py": "{A}"
      }},
      "interpreter": {{
        "path": "/b/venv/bin/python",
        "sha256": "{B}"
      }}
    }}
  }}
}}
"#
        );
        assert_eq!(text, expected);
        assert_eq!(Lock::parse(&text).unwrap(), sample());
        assert_eq!(Lock::parse(&text).unwrap().to_text(), text);
    }

    #[test]
    fn bad_locks_are_refused_with_a_position() {
        let err = Lock::parse("{\n  \"lock_version\": 1,\n  oops\n}").unwrap_err();
        assert!(matches!(err, LockError::Json { line: 3, .. }), "{err:?}");
        let err = Lock::parse(r#"{"lock_version": 2, "plugins": {}}"#).unwrap_err();
        assert_eq!(err, LockError::Version { found: 2 });
        let bad_hash = r#"{"lock_version":1,"plugins":{"abc":{"files":{"p":"xyz"}}}}"#;
        let err = Lock::parse(bad_hash).unwrap_err().to_string();
        assert!(err.contains("64 hexadecimal"), "{err}");
        let unknown = r#"{"lock_version":1,"plugins":{},"extra":1}"#;
        assert!(Lock::parse(unknown).is_err());
    }
}
