//! How a bundle is launched: a native executable, or a Python script under an
//! interpreter found by a fixed lookup order. The result is a plain value that
//! the supervisor executes later.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::integrity::{Pin, PinSource};
use crate::invalid_config::{InvalidConfig, positive};
use crate::limits::ResourceLimits;
use crate::lock::Lock;
use crate::manifest::{ManifestError, PLATFORM_KEYS, current_platform};
use crate::sandbox::SandboxPolicy;

/// Interpreters inside the bundle, in lookup order, relative to the bundle.
pub(crate) const BUNDLE_INTERPRETERS: [&str; 4] = [
    "venv/bin/python",
    "venv/bin/python3",
    ".venv/bin/python",
    ".venv/bin/python3",
];
/// Interpreter names looked up on PATH, after the bundle and the configured one.
pub(crate) const PATH_INTERPRETERS: [&str; 2] = ["python3", "python"];

/// What kind of program a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RuntimeKind {
    /// An executable, run as it is.
    Native,
    /// A Python script, run under an interpreter found by the lookup order.
    Python,
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeKind::Native => "native",
            RuntimeKind::Python => "python",
        })
    }
}

/// Settings that shape launch plans. Build with [`LaunchOptions::builder`];
/// [`Default`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaunchOptions {
    interpreter: Option<PathBuf>,
    native_start_timeout: Duration,
    python_start_timeout: Duration,
    platform: String,
    lock_file: Option<PathBuf>,
    sandbox: bool,
    limits: std::collections::BTreeMap<String, ResourceLimits>,
    zygote: bool,
}

impl LaunchOptions {
    /// Time a native plugin has from its spawn to its first SERVING health
    /// check (handshake and connection included): 3 s.
    pub const DEFAULT_NATIVE_START_TIMEOUT: Duration = Duration::from_secs(3);
    /// The same for Python plugins, which pay for the interpreter and their
    /// imports: 10 s.
    pub const DEFAULT_PYTHON_START_TIMEOUT: Duration = Duration::from_secs(10);
    /// The start timeout of a plugin in debug mode, native or Python, and
    /// the timeout of its Implemented and OnActivate: long enough for a
    /// developer to stop at a breakpoint and look around: 1 h.
    pub const DEBUG_START_TIMEOUT: Duration = Duration::from_secs(3600);

    /// Starts from the defaults: no configured interpreter, this machine's platform.
    pub fn builder() -> LaunchOptionsBuilder {
        LaunchOptionsBuilder(LaunchOptions::default())
    }

    /// The interpreter tried after the bundle's own venvs and before PATH.
    pub fn interpreter(&self) -> Option<&Path> {
        self.interpreter.as_deref()
    }

    /// Start timeout of native plugins.
    pub fn native_start_timeout(&self) -> Duration {
        self.native_start_timeout
    }

    /// Start timeout of Python plugins.
    pub fn python_start_timeout(&self) -> Duration {
        self.python_start_timeout
    }

    /// The `server.executables` key used, e.g. `linux-amd64`.
    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// The lock file in force ([`crate::Lock`]), if any. Every plan reads it
    /// again, so a re-lock applies from the next start; a plan whose plugin
    /// or file it does not list, or a lock that has become unreadable, is
    /// refused.
    pub fn lock_file(&self) -> Option<&Path> {
        self.lock_file.as_deref()
    }

    /// Whether plugins run sandboxed ([`crate::SandboxPolicy`], enforced
    /// with Landlock): each plan then carries its policy. Off by default.
    pub fn sandbox(&self) -> bool {
        self.sandbox
    }

    /// Whether Python plugins are forked from a zygote of their venv (a warm
    /// interpreter that has imported grpcio and the SDK) rather than exec'd;
    /// a bundle opts out with `server.zygote: false`. On by default.
    pub fn zygote(&self) -> bool {
        self.zygote
    }

    /// The operator's resource limits for plugin `id`: each one set here
    /// replaces the same limit of the manifest's `server.limits`.
    pub fn limits_for(&self, id: &str) -> Option<&ResourceLimits> {
        self.limits.get(id)
    }
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            interpreter: None,
            native_start_timeout: Self::DEFAULT_NATIVE_START_TIMEOUT,
            python_start_timeout: Self::DEFAULT_PYTHON_START_TIMEOUT,
            platform: current_platform(),
            lock_file: None,
            sandbox: false,
            limits: std::collections::BTreeMap::new(),
            zygote: true,
        }
    }
}

/// Builds [`LaunchOptions`]; [`LaunchOptionsBuilder::build`] checks them.
#[derive(Debug, Clone)]
pub struct LaunchOptionsBuilder(LaunchOptions);

impl LaunchOptionsBuilder {
    /// See [`LaunchOptions::interpreter`].
    pub fn interpreter(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.interpreter = Some(path.into());
        self
    }

    /// See [`LaunchOptions::native_start_timeout`]; more than zero.
    pub fn native_start_timeout(mut self, timeout: Duration) -> Self {
        self.0.native_start_timeout = timeout;
        self
    }

    /// See [`LaunchOptions::python_start_timeout`]; more than zero.
    pub fn python_start_timeout(mut self, timeout: Duration) -> Self {
        self.0.python_start_timeout = timeout;
        self
    }

    /// See [`LaunchOptions::lock_file`].
    pub fn lock_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.lock_file = Some(path.into());
        self
    }

    /// See [`LaunchOptions::sandbox`].
    pub fn sandbox(mut self, on: bool) -> Self {
        self.0.sandbox = on;
        self
    }

    /// See [`LaunchOptions::zygote`].
    pub fn zygote(mut self, on: bool) -> Self {
        self.0.zygote = on;
        self
    }

    /// See [`LaunchOptions::limits_for`]; replaces earlier limits for `id`.
    pub fn limits(mut self, id: impl Into<String>, limits: ResourceLimits) -> Self {
        self.0.limits.insert(id.into(), limits);
        self
    }

    /// See [`LaunchOptions::platform`]; one of Mattermost's platform keys.
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.0.platform = platform.into();
        self
    }

    /// The options, or the first setting that cannot work.
    pub fn build(self) -> Result<LaunchOptions, InvalidConfig> {
        let options = self.0;
        positive("start-timeout", options.native_start_timeout)?;
        positive("python-start-timeout", options.python_start_timeout)?;
        if !PLATFORM_KEYS.contains(&options.platform.as_str()) {
            return Err(InvalidConfig::new(
                "platform",
                format!(
                    "unknown platform {:?}; expected one of {}",
                    options.platform,
                    PLATFORM_KEYS.join(", ")
                ),
            ));
        }
        Ok(options)
    }
}

/// Everything needed to start a plugin process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LaunchPlan {
    /// Native or Python.
    pub runtime: RuntimeKind,
    /// The executable, or the interpreter.
    pub program: PathBuf,
    /// The script for an interpreter (relative to the working directory).
    #[serde(serialize_with = "serialize_lossy")]
    pub args: Vec<OsString>,
    /// The bundle directory; relative paths in `args` are relative to it.
    pub working_dir: PathBuf,
    /// The file the manifest names (the executable, or the Python script),
    /// relative to the bundle.
    pub bundle_file: PathBuf,
    /// The hashes the files must have, checked right before every spawn.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<Pin>,
    /// From the spawn to the first SERVING health check.
    #[serde(serialize_with = "serialize_millis")]
    pub start_timeout: Duration,
    /// What the plugin may reach, when it runs sandboxed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxPolicy>,
    /// The plugin's own data directory (`PLUGVISOR_DATA_DIR`), which the
    /// environment creates and a sandboxed plugin may write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The resource limits of the process: the manifest's, with the
    /// operator's ([`LaunchOptions::limits_for`]) in their place.
    #[serde(skip_serializing_if = "ResourceLimits::is_empty")]
    pub limits: ResourceLimits,
    /// For a Python plugin to be forked from its venv's zygote: the modules
    /// that zygote preloads (`server.preload`). `None`: exec'd.
    #[serde(skip)]
    pub zygote: Option<Vec<String>>,
}

impl LaunchPlan {
    /// The plan's limits, each with how a spawn on this host would enforce
    /// it (a cgroup of the plugin's own for memory and processes where
    /// [`crate::cgroup_support`] finds a delegated one, else setrlimit).
    pub fn enforced_limits(&self) -> Vec<crate::EnforcedLimit> {
        let delegated = matches!(crate::cgroup_support(), crate::CgroupSupport::Delegated(_));
        crate::limits::enforced(&self.limits, delegated)
    }

    /// The command as a person would type it, from the bundle directory.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(|a| a.as_os_str()))
            .map(|part| part.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn serialize_lossy<S: serde::Serializer>(args: &[OsString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(args.iter().map(|a| a.to_string_lossy()))
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Why a bundle cannot be launched: which field names which file.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum LaunchError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("field `{field}`: {} does not exist in the bundle", path.display())]
    MissingExecutable { field: String, path: PathBuf },
    #[error("field `{field}`: {} is not a regular file", path.display())]
    NotAFile { field: String, path: PathBuf },
    #[error("field `{field}`: {} is not executable; run `chmod +x {}`", path.display(), path.display())]
    NotExecutable { field: String, path: PathBuf },
    #[error("field `{field}`: {} resolves to {}, outside the bundle; symlinks may not leave the bundle", path.display(), target.display())]
    SymlinkEscape {
        field: String,
        path: PathBuf,
        target: PathBuf,
    },
    #[error("no Python interpreter found for this Python plugin; tried: {}. Create a venv in the bundle (`python3 -m venv venv`) or pass --interpreter", tried.join(", "))]
    NoInterpreter { tried: Vec<String> },
    #[error("lock file {}: {problem}", path.display())]
    Lock { path: PathBuf, problem: String },
    #[error("the lock file {} has no hash for {what}; the plugin is not started; pin it with `plugvisor lock` on the plugins directory", lock.display())]
    NotLocked { lock: PathBuf, what: String },
}

impl LaunchError {
    /// A lock that refuses this plugin: a later attempt fails the same way.
    pub(crate) fn is_integrity(&self) -> bool {
        matches!(
            self,
            LaunchError::Lock { .. }
                | LaunchError::NotLocked { .. }
                | LaunchError::Manifest(ManifestError::InvalidSha256(_))
        )
    }
}

/// Where an interpreter candidate comes from, in lookup order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpreterCandidate {
    /// A path (in the bundle, or configured).
    Path(PathBuf),
    /// A bare name to find on PATH.
    OnPath(&'static str),
}

/// The interpreter lookup order, with no file system access.
pub(crate) fn interpreter_candidates(
    bundle_dir: &Path,
    configured: Option<&Path>,
) -> Vec<InterpreterCandidate> {
    let mut candidates: Vec<_> = BUNDLE_INTERPRETERS
        .iter()
        .map(|rel| InterpreterCandidate::Path(bundle_dir.join(rel)))
        .collect();
    candidates.extend(configured.map(|p| InterpreterCandidate::Path(p.to_path_buf())));
    candidates.extend(
        PATH_INTERPRETERS
            .iter()
            .map(|n| InterpreterCandidate::OnPath(n)),
    );
    candidates
}

/// Builds the launch plan for a bundle, checking the files it names.
pub fn plan_launch(bundle: &Bundle, options: &LaunchOptions) -> Result<LaunchPlan, LaunchError> {
    let manifest = &bundle.manifest;
    let (field, relative) = manifest.executable_for(&options.platform)?;
    let file = checked_bundle_file(&bundle.dir, &field, &relative)?;
    let working_dir = std::path::absolute(&bundle.dir).unwrap_or_else(|_| bundle.dir.clone());
    let mut limits = manifest.limits()?;
    if let Some(over) = options.limits_for(bundle.id()) {
        limits = limits.overridden_by(over);
    }

    let request = manifest.sandbox_request()?;
    let bundle_dir = working_dir.clone();
    let sandbox = |dir: &Path, program: &Path, python: bool| {
        options
            .sandbox
            .then(|| SandboxPolicy::new(dir, program, python, &request))
    };
    if manifest.is_python(&options.platform) {
        let search_path = std::env::var_os("PATH").unwrap_or_default();
        let interpreter = find_interpreter(&bundle.dir, options.interpreter(), &search_path)?;
        let pins = pins(
            bundle,
            &relative,
            working_dir.join(&relative),
            Some(&interpreter),
            options,
        )?;
        return Ok(LaunchPlan {
            runtime: RuntimeKind::Python,
            args: vec![relative.clone().into_os_string()],
            working_dir,
            bundle_file: relative,
            pins,
            start_timeout: options.python_start_timeout,
            sandbox: sandbox(&bundle_dir, &interpreter, true),
            data_dir: None,
            program: interpreter,
            limits,
            zygote: (options.zygote && manifest.zygote_allowed())
                .then(|| manifest.preload().to_vec()),
        });
    }
    let mode = std::fs::metadata(&file)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o111 == 0 {
        return Err(LaunchError::NotExecutable {
            field,
            path: relative,
        });
    }
    let program = working_dir.join(&relative);
    let pins = pins(bundle, &relative, program.clone(), None, options)?;
    Ok(LaunchPlan {
        runtime: RuntimeKind::Native,
        args: Vec::new(),
        working_dir,
        bundle_file: relative,
        pins,
        start_timeout: options.native_start_timeout,
        sandbox: sandbox(&bundle_dir, &program, false),
        data_dir: None,
        program,
        limits,
        zygote: None,
    })
}

/// The hashes a start must find: the manifest's `server.sha256` for the file
/// it names, and with a lock file in force, the lock's for that file and the
/// interpreter. The lock is read here, at every plan.
fn pins(
    bundle: &Bundle,
    relative: &Path,
    path: PathBuf,
    interpreter: Option<&Path>,
    options: &LaunchOptions,
) -> Result<Vec<Pin>, LaunchError> {
    let shown = relative.to_string_lossy().into_owned();
    let mut pins = Vec::new();
    if let Some(sha256) = bundle.manifest.pinned_sha256()? {
        pins.push(Pin {
            file: shown.clone(),
            path: path.clone(),
            sha256,
            source: PinSource::Manifest,
        });
    }
    let Some(lock_path) = options.lock_file() else {
        return Ok(pins);
    };
    let lock = read_lock(lock_path)?;
    let id = bundle.id();
    let not_locked = |what: String| LaunchError::NotLocked {
        lock: lock_path.to_path_buf(),
        what,
    };
    let source = PinSource::Lock(lock_path.to_path_buf());
    let entry = lock
        .plugins
        .get(id)
        .ok_or_else(|| not_locked(format!("plugin {id:?}")))?;
    let sha256 = *entry
        .files
        .get(&shown)
        .ok_or_else(|| not_locked(format!("{shown} of plugin {id:?}")))?;
    pins.push(Pin {
        file: shown,
        path,
        sha256,
        source: source.clone(),
    });
    if let Some(interpreter) = interpreter {
        let locked = entry
            .interpreter
            .as_ref()
            .ok_or_else(|| not_locked(format!("the Python interpreter of plugin {id:?}")))?;
        pins.push(Pin {
            file: interpreter.display().to_string(),
            path: interpreter.to_path_buf(),
            sha256: locked.sha256,
            source,
        });
    }
    Ok(pins)
}

fn read_lock(path: &Path) -> Result<Lock, LaunchError> {
    let problem = |problem: String| LaunchError::Lock {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        problem(match e.kind() {
            std::io::ErrorKind::NotFound => {
                "does not exist, but it is in force; write it with `plugvisor lock`".to_string()
            }
            _ => format!("cannot be read: {e}"),
        })
    })?;
    Lock::parse(&text).map_err(|e| problem(e.to_string()))
}

/// Resolves `relative` inside `bundle_dir`, following symlinks, and refuses any
/// file that is missing, not a file, or outside the bundle.
fn checked_bundle_file(
    bundle_dir: &Path,
    field: &str,
    relative: &Path,
) -> Result<PathBuf, LaunchError> {
    let joined = bundle_dir.join(relative);
    let resolved = match std::fs::canonicalize(&joined) {
        Ok(resolved) => resolved,
        Err(_) => {
            return Err(LaunchError::MissingExecutable {
                field: field.to_string(),
                path: relative.to_path_buf(),
            });
        }
    };
    let root = std::fs::canonicalize(bundle_dir).unwrap_or_else(|_| bundle_dir.to_path_buf());
    if !resolved.starts_with(&root) {
        return Err(LaunchError::SymlinkEscape {
            field: field.to_string(),
            path: relative.to_path_buf(),
            target: resolved,
        });
    }
    if !resolved.is_file() {
        return Err(LaunchError::NotAFile {
            field: field.to_string(),
            path: relative.to_path_buf(),
        });
    }
    Ok(resolved)
}

/// Walks the lookup order. A venv's python is a symlink out of the bundle by
/// design, so the bundle-escape rule does not apply to interpreters.
fn find_interpreter(
    bundle_dir: &Path,
    configured: Option<&Path>,
    search_path: &std::ffi::OsStr,
) -> Result<PathBuf, LaunchError> {
    let mut tried = Vec::new();
    for candidate in interpreter_candidates(bundle_dir, configured) {
        match candidate {
            InterpreterCandidate::Path(path) => {
                if is_executable_file(&path) {
                    return Ok(std::path::absolute(&path).unwrap_or(path));
                }
                tried.push(path.display().to_string());
            }
            InterpreterCandidate::OnPath(name) => {
                if let Some(found) = std::env::split_paths(search_path)
                    .map(|dir| dir.join(name))
                    .find(|p| is_executable_file(p))
                {
                    return Ok(found);
                }
                tried.push(format!("{name} on PATH"));
            }
        }
    }
    Err(LaunchError::NoInterpreter { tried })
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn bundle(dir: &Path, manifest: &str) -> Bundle {
        Bundle {
            dir: dir.to_path_buf(),
            manifest: Manifest::parse(manifest).unwrap(),
        }
    }

    /// A bundle whose plugin.py runs under the interpreter at `python`, in it.
    fn python_bundle(dir: &Path, python: &str) -> Bundle {
        std::fs::write(dir.join("plugin.py"), "").unwrap();
        write_executable(&dir.join(python));
        bundle(dir, r#"{"id":"abc","server":{"executable":"plugin.py"}}"#)
    }

    fn write_executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn options() -> LaunchOptions {
        LaunchOptions::builder()
            .platform("linux-amd64")
            .build()
            .unwrap()
    }

    #[test]
    fn lookup_order_is_bundle_then_configured_then_path() {
        let candidates =
            interpreter_candidates(Path::new("/b"), Some(Path::new("/opt/py/bin/python")));
        assert_eq!(
            candidates,
            vec![
                InterpreterCandidate::Path("/b/venv/bin/python".into()),
                InterpreterCandidate::Path("/b/venv/bin/python3".into()),
                InterpreterCandidate::Path("/b/.venv/bin/python".into()),
                InterpreterCandidate::Path("/b/.venv/bin/python3".into()),
                InterpreterCandidate::Path("/opt/py/bin/python".into()),
                InterpreterCandidate::OnPath("python3"),
                InterpreterCandidate::OnPath("python"),
            ]
        );
    }

    #[test]
    fn native_plan_runs_the_file_from_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        write_executable(&dir.path().join("bin/plugin"));
        let b = bundle(
            dir.path(),
            r#"{"id":"abc","server":{"executables":{"linux-amd64":"bin/plugin"}}}"#,
        );
        let plan = plan_launch(&b, &options()).unwrap();
        assert_eq!(plan.runtime, RuntimeKind::Native);
        assert_eq!(plan.program, dir.path().join("bin/plugin"));
        assert_eq!(plan.working_dir, dir.path());
        assert_eq!(plan.start_timeout, Duration::from_secs(3));
    }

    #[test]
    fn native_file_must_exist_and_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle(
            dir.path(),
            r#"{"id":"abc","server":{"executable":"plugin"}}"#,
        );
        assert!(matches!(
            plan_launch(&b, &options()),
            Err(LaunchError::MissingExecutable { .. })
        ));
        std::fs::write(dir.path().join("plugin"), "x").unwrap();
        let err = plan_launch(&b, &options()).unwrap_err();
        assert!(err.to_string().contains("chmod +x"), "{err}");
        std::fs::create_dir(dir.path().join("adir")).unwrap();
        let b = bundle(dir.path(), r#"{"id":"abc","server":{"executable":"adir"}}"#);
        assert!(matches!(
            plan_launch(&b, &options()),
            Err(LaunchError::NotAFile { .. })
        ));
    }

    #[test]
    fn symlink_out_of_the_bundle_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        write_executable(&outside.path().join("evil"));
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("evil"), dir.path().join("plugin")).unwrap();
        let b = bundle(
            dir.path(),
            r#"{"id":"abc","server":{"executable":"plugin"}}"#,
        );
        let err = plan_launch(&b, &options()).unwrap_err();
        assert!(matches!(err, LaunchError::SymlinkEscape { .. }), "{err}");
        // A symlink that stays inside is fine.
        write_executable(&dir.path().join("real"));
        std::fs::remove_file(dir.path().join("plugin")).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("plugin")).unwrap();
        assert!(plan_launch(&b, &options()).is_ok());
    }

    #[test]
    fn python_plan_prefers_the_bundle_venv() {
        let dir = tempfile::tempdir().unwrap();
        let b = python_bundle(dir.path(), ".venv/bin/python3");
        let configured = tempfile::tempdir().unwrap();
        write_executable(&configured.path().join("python"));
        let plan = plan_launch(
            &b,
            &LaunchOptions::builder()
                .platform("linux-amd64")
                .interpreter(configured.path().join("python"))
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(plan.runtime, RuntimeKind::Python);
        assert_eq!(plan.program, dir.path().join(".venv/bin/python3"));
        assert_eq!(plan.args, vec![OsString::from("plugin.py")]);
        assert_eq!(plan.start_timeout, Duration::from_secs(10));
        // Without the venv, the configured interpreter wins over PATH.
        std::fs::remove_dir_all(dir.path().join(".venv")).unwrap();
        let plan = plan_launch(
            &b,
            &LaunchOptions::builder()
                .platform("linux-amd64")
                .interpreter(configured.path().join("python"))
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(plan.program, configured.path().join("python"));
    }

    #[test]
    fn no_interpreter_lists_every_candidate() {
        let dir = tempfile::tempdir().unwrap();
        let empty_path = tempfile::tempdir().unwrap();
        let err = find_interpreter(
            dir.path(),
            Some(Path::new("/nonexistent/python")),
            empty_path.path().as_os_str(),
        )
        .unwrap_err();
        let message = err.to_string();
        for expected in [
            "venv/bin/python,",
            "venv/bin/python3",
            ".venv/bin/python,",
            ".venv/bin/python3",
            "/nonexistent/python",
            "python3 on PATH",
            "python on PATH",
        ] {
            assert!(message.contains(expected), "{expected} missing: {message}");
        }
        write_executable(&empty_path.path().join("python"));
        let found = find_interpreter(dir.path(), None, empty_path.path().as_os_str()).unwrap();
        assert_eq!(found, empty_path.path().join("python"));
    }

    #[test]
    fn pins_come_from_the_manifest_and_the_lock_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let bundle_dir = dir.path().join("abc");
        write_executable(&bundle_dir.join("bin/plugin"));
        let digest = "ab".repeat(32);
        let b = bundle(
            &bundle_dir,
            &format!(
                r#"{{"id":"abc","server":{{"executable":"bin/plugin","sha256":"{digest}"}}}}"#
            ),
        );
        let plan = plan_launch(&b, &options()).unwrap();
        assert_eq!(plan.pins.len(), 1);
        assert_eq!(plan.pins[0].source, PinSource::Manifest);
        assert_eq!(plan.pins[0].path, plan.program);
        assert_eq!(plan.pins[0].sha256.to_string(), digest);

        let lock_path = dir.path().join("plugvisor.lock");
        let locked = |text: &str| {
            std::fs::write(&lock_path, text).unwrap();
            let options = LaunchOptions::builder()
                .platform("linux-amd64")
                .lock_file(&lock_path)
                .build()
                .unwrap();
            plan_launch(&b, &options)
        };
        let other = "cd".repeat(32);
        let plan = locked(&format!(
            r#"{{"lock_version":1,"plugins":{{"abc":{{"files":{{"bin/plugin":"{other}"}}}}}}}}"#
        ))
        .unwrap();
        assert_eq!(plan.pins.len(), 2, "the manifest's and the lock's");
        assert_eq!(plan.pins[1].source, PinSource::Lock(lock_path.clone()));
        assert_eq!(plan.pins[1].sha256.to_string(), other);
        // The lock lists the plugin, but not this file.
        let err = locked(&format!(
            r#"{{"lock_version":1,"plugins":{{"abc":{{"files":{{"bin/old":"{other}"}}}}}}}}"#
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("no hash for bin/plugin of plugin \"abc\""),
            "{err}"
        );
        assert!(err.is_integrity());
        let err = locked("{").unwrap_err();
        assert!(matches!(err, LaunchError::Lock { .. }), "{err}");
        std::fs::remove_file(&lock_path).unwrap();
        let options = LaunchOptions::builder()
            .platform("linux-amd64")
            .lock_file(&lock_path)
            .build()
            .unwrap();
        let err = plan_launch(&b, &options).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not exist, but it is in force"),
            "{err}"
        );
    }

    #[test]
    fn a_locked_python_plugin_needs_its_interpreter_locked() {
        let dir = tempfile::tempdir().unwrap();
        let b = python_bundle(dir.path(), "venv/bin/python");
        let lock_path = dir.path().join("plugvisor.lock");
        let digest = "ab".repeat(32);
        std::fs::write(
            &lock_path,
            format!(
                r#"{{"lock_version":1,"plugins":{{"abc":{{"files":{{"plugin.py":"{digest}"}}}}}}}}"#
            ),
        )
        .unwrap();
        let options = LaunchOptions::builder()
            .platform("linux-amd64")
            .lock_file(&lock_path)
            .build()
            .unwrap();
        let err = plan_launch(&b, &options).unwrap_err();
        assert!(
            err.to_string().contains("the Python interpreter of plugin"),
            "{err}"
        );
    }

    #[test]
    fn python_script_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle(
            dir.path(),
            r#"{"id":"abc","server":{"executable":"plugin.py"}}"#,
        );
        assert!(matches!(
            plan_launch(&b, &options()),
            Err(LaunchError::MissingExecutable { .. })
        ));
    }
}
