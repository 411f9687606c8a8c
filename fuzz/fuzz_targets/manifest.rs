//! Fuzzes `plugin.json` parsing (`Manifest::parse`) and the bundle path
//! cleaner (`clean_bundle_path`), on arbitrary bytes read as (lossy) UTF-8.
#![no_main]

use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use plugvisor::manifest::{Manifest, ManifestError, PLATFORM_KEYS, clean_bundle_path};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    // The whole input as a bundle path: mutated manifests are full of '/', '.' and "..".
    check_clean_bundle_path(text);

    let manifest = match Manifest::parse(text) {
        Ok(manifest) => manifest,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    manifest.validate().expect("a parsed manifest is valid");

    // Round trip: serialise, parse again, same manifest.
    let json = serde_json::to_string(&manifest).expect("a manifest serialises");
    let again = Manifest::parse(&json)
        .unwrap_or_else(|e| panic!("round trip of {text:?} via {json:?} failed: {e}"));
    assert_eq!(again, manifest, "round trip of {text:?} via {json:?}");
    assert_eq!(serde_json::to_string(&again).unwrap(), json);

    // Every executable path the manifest names is safe; validation already
    // checked them, so `executable_for` never reports an unsafe path.
    for platform in PLATFORM_KEYS.iter().copied().chain(["linux-386", ""]) {
        match manifest.executable_for(platform) {
            Ok((field, path)) => {
                assert!(field.starts_with("server.executable"));
                check_safe(&path);
            }
            Err(ManifestError::Missing { .. } | ManifestError::NoExecutable { .. }) => {}
            Err(other) => panic!("{text:?}: executable_for({platform:?}) failed: {other}"),
        }
        let _ = manifest.is_python(platform);
    }
    if let Some(server) = &manifest.server {
        for raw in server.executables.iter().flat_map(|m| m.values()) {
            check_clean_bundle_path(raw);
        }
        if let Some(raw) = &server.executable {
            check_clean_bundle_path(raw);
        }
    }
    let _ = manifest.display_version();
});

/// A cleaned path is relative, names something inside the bundle, and has only
/// plain components; it agrees with a simple model of the rules.
fn check_clean_bundle_path(raw: &str) {
    let result = clean_bundle_path("f", raw);
    let expected = model_clean(raw);
    match (&result, &expected) {
        (Ok(path), Some(model)) => {
            check_safe(path);
            assert_eq!(path, model, "{raw:?}");
            // Cleaning is idempotent.
            let again = clean_bundle_path("f", path.to_str().unwrap()).unwrap();
            assert_eq!(&again, path, "{raw:?}");
        }
        (Err(ManifestError::UnsafePath { path, .. }), None) => assert_eq!(path, raw),
        _ => panic!("{raw:?}: clean_bundle_path gave {result:?}, the model {expected:?}"),
    }
}

fn check_safe(path: &Path) {
    assert!(path.is_relative(), "{path:?}");
    assert!(!path.as_os_str().is_empty());
    assert!(
        path.components().all(|c| matches!(c, Component::Normal(_))),
        "{path:?}"
    );
}

/// The rules, written out on '/'-separated strings: no NUL, not blank, not
/// absolute, `..` may not climb above the bundle, and something must remain.
fn model_clean(raw: &str) -> Option<PathBuf> {
    if raw.trim().is_empty() || raw.contains('\0') || raw.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    // Nothing left, or only blanks (" /"): empty.
    if parts.is_empty() || parts.join("/").trim().is_empty() {
        return None;
    }
    Some(parts.iter().collect())
}
