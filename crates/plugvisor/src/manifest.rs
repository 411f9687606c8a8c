//! `plugin.json`: parsing and validation, compatible with Mattermost's manifest schema.
//!
//! Everything here is pure: no file is read and no process is started. Unknown
//! fields are kept, so a manifest survives a round trip unchanged.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Platform keys accepted in `server.executables`, as Mattermost spells them.
pub const PLATFORM_KEYS: [&str; 5] = [
    "linux-amd64",
    "linux-arm64",
    "darwin-amd64",
    "darwin-arm64",
    "windows-amd64",
];

const ID_MIN_LEN: usize = 3;
const ID_MAX_LEN: usize = 190;

/// A bundle's `plugin.json`, in Mattermost's schema. Unknown fields are kept
/// in `extra`, so a manifest survives a round trip unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// 3 to 190 characters of `a-z A-Z 0-9 - _ .`, unique in a plugins directory.
    #[serde(default)]
    pub id: String,
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the plugin does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Semantic version (a leading `v` is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Semantic version of the host the plugin needs, as Mattermost has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_server_version: Option<String>,
    /// How to run the plugin's server side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSection>,
    /// The plugin's settings (Mattermost's `settings_schema`), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_schema: Option<Value>,
    /// Every other field, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The manifest's `server` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServerSection {
    /// Per-platform executables (`linux-amd64` → path), which win over `executable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executables: Option<BTreeMap<String, String>>,
    /// The executable for every platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// `"python"` for a Python plugin (else the `.py` extension decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The sha256 (64 hexadecimal digits) of the file the plugin runs on this
    /// platform (the executable, or a Python plugin's script); a file that does
    /// not match is refused at every start, lock file or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What the plugin may reach beyond the default policy when plugvisor
    /// runs it sandboxed ([`crate::SandboxRequest`]), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Value>,
    /// plugvisor's resource limits of the plugin process, as written
    /// ([`crate::ResourceLimits::from_json`]; read with [`Manifest::limits`]).
    /// Mattermost ignores the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Value>,
    /// `false` to always exec this Python plugin rather than fork it from its
    /// venv's zygote (on by default where the host has the zygote on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zygote: Option<bool>,
    /// Modules its venv's zygote imports beforehand (dotted names), so that
    /// a forked plugin finds them loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<Vec<String>>,
    /// Every other field, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Fields Mattermost's manifest knows at the top level, for "did you mean".
const KNOWN_FIELDS: [&str; 14] = [
    "id",
    "name",
    "description",
    "version",
    "min_server_version",
    "server",
    "settings_schema",
    "webapp",
    "homepage_url",
    "support_url",
    "release_notes_url",
    "icon_path",
    "requires_config",
    "props",
];
/// Fields of the `server` section.
const KNOWN_SERVER_FIELDS: [&str; 8] = [
    "executables",
    "executable",
    "runtime",
    "sha256",
    "sandbox",
    "limits",
    "zygote",
    "preload",
];

/// What is wrong with a manifest. `field` names the JSON field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum ManifestError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("field `id`: {reason} (got {id:?})")]
    InvalidId { id: String, reason: String },
    #[error(
        "field `{field}`: {value:?} is not a semantic version: expected MAJOR.MINOR.PATCH, such as 1.0.0 ({reason})"
    )]
    InvalidVersion {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("field `server.executables`: unknown platform key {key:?}; expected one of {}", PLATFORM_KEYS.join(", "))]
    UnknownPlatform { key: String },
    #[error(
        "field `server.runtime`: unsupported runtime {runtime:?}; the only runtime plugvisor knows is \"python\" (omit the field for a native executable)"
    )]
    UnknownRuntime { runtime: String },
    #[error(
        "field `{field}`: no executable for platform {platform}; add `server.executables.{platform}` or `server.executable`"
    )]
    NoExecutable {
        field: &'static str,
        platform: String,
    },
    #[error("{0}")]
    Settings(String),
    #[error("field `server.sha256`: {0}")]
    InvalidSha256(crate::digest::InvalidSha256),
    #[error("field `server.sandbox`: {0}")]
    InvalidSandbox(String),
    #[error("field `server.limits{}`: {}", .0.dotted_field(), .0.problem)]
    InvalidLimits(crate::limits::LimitsError),
    #[error(
        "field `server.preload`: {module:?} is not a module name (dotted Python identifiers, such as `numpy` or `email.mime.text`)"
    )]
    InvalidPreload { module: String },
    #[error(
        "field `{field}`: path {path:?} {reason}; executable paths must stay inside the bundle"
    )]
    UnsafePath {
        field: String,
        path: String,
        reason: &'static str,
    },
}

impl Manifest {
    /// Parses and validates a manifest's text.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| ManifestError::Json {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks every rule that needs no file system.
    pub fn validate(&self) -> Result<(), ManifestError> {
        validate_id(&self.id)?;
        self.settings().map_err(ManifestError::Settings)?;
        if let Some(version) = &self.version {
            validate_semver("version", version)?;
        }
        if let Some(version) = &self.min_server_version {
            validate_semver("min_server_version", version)?;
        }
        let Some(server) = &self.server else {
            return Ok(());
        };
        if let Some(runtime) = &server.runtime
            && runtime != "python"
        {
            return Err(ManifestError::UnknownRuntime {
                runtime: runtime.clone(),
            });
        }
        if let Some(executables) = &server.executables {
            for (key, path) in executables {
                if !PLATFORM_KEYS.contains(&key.as_str()) {
                    return Err(ManifestError::UnknownPlatform { key: key.clone() });
                }
                clean_bundle_path(&format!("server.executables.{key}"), path)?;
            }
        }
        if let Some(path) = &server.executable {
            clean_bundle_path("server.executable", path)?;
        }
        self.pinned_sha256()?;
        self.limits()?;
        for module in server.preload.iter().flatten() {
            let identifier = |part: &str| {
                part.chars()
                    .next()
                    .is_some_and(|c| c == '_' || c.is_alphabetic())
                    && part.chars().all(|c| c == '_' || c.is_alphanumeric())
            };
            if !module.split('.').all(identifier) {
                return Err(ManifestError::InvalidPreload {
                    module: module.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether this plugin may be forked from a zygote (`server.zygote`).
    pub fn zygote_allowed(&self) -> bool {
        self.server.as_ref().and_then(|s| s.zygote) != Some(false)
    }

    /// `server.preload`: what the zygote of its venv imports beforehand.
    pub fn preload(&self) -> &[String] {
        self.server
            .as_ref()
            .and_then(|s| s.preload.as_deref())
            .unwrap_or_default()
    }

    /// `server.limits`, parsed; none set when the field is absent.
    pub fn limits(&self) -> Result<crate::ResourceLimits, ManifestError> {
        match self.server.as_ref().and_then(|s| s.limits.as_ref()) {
            None => Ok(crate::ResourceLimits::default()),
            Some(value) => {
                crate::ResourceLimits::from_json(value).map_err(ManifestError::InvalidLimits)
            }
        }
    }

    /// `server.sha256`, parsed.
    pub fn pinned_sha256(&self) -> Result<Option<crate::Sha256>, ManifestError> {
        let Some(text) = self.server.as_ref().and_then(|s| s.sha256.as_ref()) else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(ManifestError::InvalidSha256)
    }

    /// `server.sandbox`, parsed (empty when absent).
    pub fn sandbox_request(&self) -> Result<crate::SandboxRequest, ManifestError> {
        match self.server.as_ref().and_then(|s| s.sandbox.as_ref()) {
            None => Ok(crate::SandboxRequest::default()),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| ManifestError::InvalidSandbox(e.to_string())),
        }
    }

    /// The executable for `platform` (e.g. `linux-amd64`): `server.executables[platform]`
    /// wins over `server.executable`. Returns the field it came from and the cleaned path.
    pub fn executable_for(&self, platform: &str) -> Result<(String, PathBuf), ManifestError> {
        let server = self.server.as_ref().ok_or(ManifestError::Missing {
            field: "server.executable",
        })?;
        if let Some(path) = server.executables.as_ref().and_then(|m| m.get(platform)) {
            let field = format!("server.executables.{platform}");
            let cleaned = clean_bundle_path(&field, path)?;
            return Ok((field, cleaned));
        }
        if let Some(path) = &server.executable {
            let field = "server.executable".to_string();
            let cleaned = clean_bundle_path(&field, path)?;
            return Ok((field, cleaned));
        }
        Err(ManifestError::NoExecutable {
            field: "server.executables",
            platform: platform.to_string(),
        })
    }

    /// A Python plugin says `server.runtime: "python"` or has an executable ending in `.py`.
    pub fn is_python(&self, platform: &str) -> bool {
        let Some(server) = &self.server else {
            return false;
        };
        server.runtime.as_deref() == Some("python")
            || self
                .executable_for(platform)
                .map(|(_, path)| path.extension().is_some_and(|ext| ext == "py"))
                .unwrap_or(false)
    }

    /// The plugin's settings, from `settings_schema.settings`.
    pub fn settings(&self) -> Result<crate::SettingsSchema, String> {
        crate::SettingsSchema::parse(self.settings_schema.as_ref())
    }

    /// The version, or "-" when there is none.
    pub fn display_version(&self) -> &str {
        self.version.as_deref().unwrap_or("-")
    }

    /// A warning for each unknown field that is one edit away from a known
    /// one (`executible`): probably a typo. Unknown fields are still kept.
    pub fn unknown_field_hints(&self) -> Vec<String> {
        let mut hints = typo_hints("", self.extra.keys(), &KNOWN_FIELDS);
        if let Some(server) = &self.server {
            hints.extend(typo_hints(
                "server.",
                server.extra.keys(),
                &KNOWN_SERVER_FIELDS,
            ));
        }
        hints
    }
}

fn typo_hints<'a>(
    prefix: &str,
    unknown: impl Iterator<Item = &'a String>,
    known: &[&str],
) -> Vec<String> {
    unknown
        .filter_map(|field| {
            let near = known
                .iter()
                .find(|k| strsim::damerau_levenshtein(field, k) == 1)?;
            Some(format!(
                "unknown field `{prefix}{field}` (kept as it is); did you mean `{prefix}{near}`?"
            ))
        })
        .collect()
}

/// The platform key of the machine this runs on, in Mattermost's spelling.
pub fn current_platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{os}-{arch}")
}

fn validate_id(id: &str) -> Result<(), ManifestError> {
    if id.is_empty() {
        return Err(ManifestError::Missing { field: "id" });
    }
    let invalid = |reason: String| ManifestError::InvalidId {
        id: id.to_string(),
        reason,
    };
    let len = id.chars().count();
    if !(ID_MIN_LEN..=ID_MAX_LEN).contains(&len) {
        return Err(invalid(format!(
            "must be {ID_MIN_LEN} to {ID_MAX_LEN} characters long, not {len}"
        )));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(invalid(format!(
            "character {bad:?} is not allowed; use letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

fn validate_semver(field: &'static str, value: &str) -> Result<(), ManifestError> {
    // Mattermost accepts a leading "v".
    let bare = value.strip_prefix('v').unwrap_or(value);
    semver::Version::parse(bare)
        .map(|_| ())
        .map_err(|e| ManifestError::InvalidVersion {
            field,
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// Cleans a bundle-relative path lexically and refuses any that would leave the bundle.
/// Symlinks are checked later, against the real file system (see `runtime`).
pub fn clean_bundle_path(field: &str, raw: &str) -> Result<PathBuf, ManifestError> {
    let unsafe_path = |reason| ManifestError::UnsafePath {
        field: field.to_string(),
        path: raw.to_string(),
        reason,
    };
    if raw.trim().is_empty() {
        return Err(unsafe_path("is empty"));
    }
    if raw.contains('\0') {
        return Err(unsafe_path("contains a NUL byte"));
    }
    let path = Path::new(raw);
    let mut cleaned = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => cleaned.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !cleaned.pop() {
                    return Err(unsafe_path("climbs out of the bundle with `..`"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path("is absolute"));
            }
        }
    }
    if cleaned.as_os_str().is_empty() {
        return Err(unsafe_path("names the bundle directory itself"));
    }
    // What cleans to blanks (" /", "x/../ ") is as empty as " " itself.
    if cleaned.to_string_lossy().trim().is_empty() {
        return Err(unsafe_path("is empty"));
    }
    Ok(cleaned)
}

/// serde_json appends " at line L column C"; we report those as fields.
pub(crate) fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text)
    }

    #[test]
    fn parses_a_mattermost_manifest_and_keeps_unknown_fields() {
        let text = r#"{
            "id": "com.example.demo", "name": "Demo", "version": "1.2.3",
            "min_server_version": "9.0.0",
            "homepage_url": "https://example.com",
            "server": {"executables": {"linux-amd64": "server/dist/plugin-linux-amd64"},
                       "executable": "server/plugin", "extra_server": 1},
            "webapp": {"bundle_path": "webapp/dist/main.js"},
            "settings_schema": {"settings": [{"key": "A", "type": "text"}]}
        }"#;
        let manifest = parse(text).unwrap();
        assert_eq!(manifest.id, "com.example.demo");
        assert_eq!(manifest.extra["homepage_url"], "https://example.com");
        assert!(manifest.extra.contains_key("webapp"));
        assert_eq!(manifest.server.as_ref().unwrap().extra["extra_server"], 1);
        let round_trip: Value = serde_json::to_value(&manifest).unwrap();
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(round_trip, original);
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = parse("{\n  \"id\": \"abc\",\n  oops\n}").unwrap_err();
        match err {
            ManifestError::Json { line, column, .. } => {
                assert_eq!(line, 3);
                assert_eq!(column, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn id_rules() {
        assert_eq!(
            parse(r#"{"version":"1.0.0"}"#).unwrap_err(),
            ManifestError::Missing { field: "id" }
        );
        let too_short = parse(r#"{"id":"ab"}"#).unwrap_err();
        assert!(too_short.to_string().contains("3 to 190"), "{too_short}");
        let long = format!(r#"{{"id":"{}"}}"#, "a".repeat(191));
        assert!(matches!(
            parse(&long).unwrap_err(),
            ManifestError::InvalidId { .. }
        ));
        let ok = format!(r#"{{"id":"{}"}}"#, "a".repeat(190));
        assert!(parse(&ok).is_ok());
        let bad = parse(r#"{"id":"bad id"}"#).unwrap_err();
        assert!(bad.to_string().contains("' '"), "{bad}");
        assert!(parse(r#"{"id":"a-b_c.D9"}"#).is_ok());
        assert!(parse(r#"{"id":"caf\u00e9"}"#).is_err());
    }

    #[test]
    fn a_field_one_edit_from_a_known_one_gets_a_hint() {
        let m =
            parse(r#"{"id":"abc","descripton":"x","colour":"red","server":{"executible":"p"}}"#)
                .unwrap();
        let hints = m.unknown_field_hints();
        assert_eq!(hints.len(), 2, "{hints:?}");
        assert!(hints[0].contains("`descripton`") && hints[0].contains("`description`"));
        assert!(
            hints[1].contains("`server.executible`") && hints[1].contains("`server.executable`")
        );
        assert!(m.server.unwrap().extra.contains_key("executible"), "kept");
    }

    #[test]
    fn version_must_be_semver() {
        assert!(parse(r#"{"id":"abc","version":"1.0.0"}"#).is_ok());
        assert!(parse(r#"{"id":"abc","version":"v1.0.0-rc.1"}"#).is_ok());
        let err = parse(r#"{"id":"abc","version":"1.0"}"#).unwrap_err();
        assert!(
            err.to_string().contains("expected MAJOR.MINOR.PATCH"),
            "{err}"
        );
        assert!(matches!(
            err,
            ManifestError::InvalidVersion {
                field: "version",
                ..
            }
        ));
        let err = parse(r#"{"id":"abc","min_server_version":"nine"}"#).unwrap_err();
        assert!(err.to_string().contains("min_server_version"));
    }

    #[test]
    fn server_sha256_must_be_a_digest() {
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let text = format!(r#"{{"id":"abc","server":{{"executable":"p","sha256":"{good}"}}}}"#);
        let m = parse(&text).unwrap();
        assert_eq!(m.pinned_sha256().unwrap().unwrap().to_string(), good);
        assert!(m.unknown_field_hints().is_empty());
        let err = parse(r#"{"id":"abc","server":{"executable":"p","sha256":"abc"}}"#).unwrap_err();
        assert!(matches!(err, ManifestError::InvalidSha256(_)), "{err:?}");
        assert!(err.to_string().contains("server.sha256"), "{err}");
    }

    #[test]
    fn zygote_opt_out_and_preload_are_read_and_checked() {
        let m = parse(r#"{"id":"abc","server":{"executable":"p.py","zygote":false,"preload":["numpy","email.mime"]}}"#).unwrap();
        assert!(!m.zygote_allowed());
        assert_eq!(m.preload(), ["numpy", "email.mime"]);
        assert!(
            parse(r#"{"id":"abc","server":{"executable":"p.py"}}"#)
                .unwrap()
                .zygote_allowed()
        );
        let error =
            parse(r#"{"id":"abc","server":{"executable":"p.py","preload":["os; import x"]}}"#)
                .unwrap_err();
        assert!(
            error.to_string().contains("is not a module name"),
            "{error}"
        );
    }

    #[test]
    fn server_limits_are_checked_with_the_manifest() {
        let m = parse(
            r#"{"id":"abc","server":{"executable":"p","limits":{"memory":"64MiB","cpu_seconds":5}}}"#,
        )
        .unwrap();
        let limits = m.limits().unwrap();
        assert_eq!(limits.memory, Some(64 << 20));
        assert_eq!(limits.cpu_seconds, Some(5));
        let err =
            parse(r#"{"id":"abc","server":{"executable":"p","limits":{"memory":"64 megs"}}}"#)
                .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("field `server.limits.memory`: \"64 megs\" is not a size"),
            "{err}"
        );
        assert!(m.unknown_field_hints().is_empty());
    }

    #[test]
    fn platform_executable_wins_over_generic() {
        let m = parse(
            r#"{"id":"abc","server":{"executable":"generic","executables":{"linux-amd64":"bin/linux"}}}"#,
        )
        .unwrap();
        assert_eq!(
            m.executable_for("linux-amd64").unwrap(),
            (
                "server.executables.linux-amd64".to_string(),
                PathBuf::from("bin/linux")
            )
        );
        assert_eq!(
            m.executable_for("darwin-arm64").unwrap().1,
            PathBuf::from("generic")
        );
    }

    #[test]
    fn no_executable_for_platform() {
        let m = parse(r#"{"id":"abc","server":{"executables":{"linux-arm64":"x"}}}"#).unwrap();
        let err = m.executable_for("linux-amd64").unwrap_err();
        assert!(err.to_string().contains("linux-amd64"), "{err}");
        let m = parse(r#"{"id":"abc"}"#).unwrap();
        assert!(m.executable_for("linux-amd64").is_err());
    }

    #[test]
    fn unknown_platform_and_runtime_are_refused() {
        let err = parse(r#"{"id":"abc","server":{"executables":{"linux-386":"x"}}}"#).unwrap_err();
        assert!(matches!(err, ManifestError::UnknownPlatform { .. }));
        let err =
            parse(r#"{"id":"abc","server":{"executable":"x","runtime":"ruby"}}"#).unwrap_err();
        assert!(matches!(err, ManifestError::UnknownRuntime { .. }));
    }

    #[test]
    fn paths_may_not_escape() {
        for bad in [
            "../x",
            "a/../../x",
            "/usr/bin/python3",
            "",
            ".",
            "a/..",
            "x\0y",
        ] {
            let text = serde_json::json!({"id":"abc","server":{"executable":bad}}).to_string();
            assert!(
                matches!(parse(&text), Err(ManifestError::UnsafePath { .. })),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(
            clean_bundle_path("f", "./server/../bin//plugin").unwrap(),
            PathBuf::from("bin/plugin")
        );
    }

    #[test]
    fn python_detection() {
        let by_ext = parse(r#"{"id":"abc","server":{"executable":"plugin.py"}}"#).unwrap();
        assert!(by_ext.is_python("linux-amd64"));
        let by_runtime =
            parse(r#"{"id":"abc","server":{"executable":"main","runtime":"python"}}"#).unwrap();
        assert!(by_runtime.is_python("linux-amd64"));
        let native = parse(r#"{"id":"abc","server":{"executable":"main"}}"#).unwrap();
        assert!(!native.is_python("linux-amd64"));
    }

    #[test]
    fn current_platform_uses_mattermost_spelling() {
        let platform = current_platform();
        assert!(!platform.contains("x86_64") && !platform.contains("macos"));
        assert!(platform.contains('-'));
    }

    /// Found by `fuzz/` (manifest target): " /" cleaned to " ", a path that
    /// `clean_bundle_path` itself refuses as empty.
    #[test]
    fn fuzz_regression_blank_after_cleaning() {
        for raw in [" /", "x/../ ", "./\t/", " /."] {
            assert!(
                matches!(
                    clean_bundle_path("f", raw),
                    Err(ManifestError::UnsafePath {
                        reason: "is empty",
                        ..
                    })
                ),
                "{raw:?} was accepted"
            );
        }
        let text = serde_json::json!({"id":"abc","server":{"executable":" /"}}).to_string();
        assert!(matches!(
            parse(&text),
            Err(ManifestError::UnsafePath { .. })
        ));
        // A blank name beside others is an ordinary (if odd) file name.
        assert_eq!(clean_bundle_path("f", "a/ ").unwrap(), PathBuf::from("a/ "));
    }

    /// Found by `fuzz/` (manifest target): without serde_json's
    /// `float_roundtrip`, a number in an unknown field was parsed 1 ULP off and
    /// drifted again on the next parse, so a manifest did not survive a round trip.
    #[test]
    fn fuzz_regression_numbers_survive_a_round_trip() {
        let digits = "1111111115555555555555555555555555110";
        let text = format!("{{\"id\":\"abc\",\"rver\":\t{digits}}}");
        let manifest = parse(&text).unwrap();
        let exact: f64 = digits.parse().unwrap();
        assert_eq!(manifest.extra["rver"].as_f64(), Some(exact));
        let again = parse(&serde_json::to_string(&manifest).unwrap()).unwrap();
        assert_eq!(again, manifest);
    }
}
