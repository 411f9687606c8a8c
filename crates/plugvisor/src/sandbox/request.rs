//! The manifest's `server.sandbox` section: what a bundle asks for beyond
//! the default policy.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// More than the default sandbox policy, as a bundle asks for it in
/// `plugin.json`:
///
/// ```json
/// "server": {
///   "executable": "plugin",
///   "sandbox": {"read": ["/srv/shared"], "write": ["cache"],
///               "bind_ports": [8080], "connect_ports": [5432]}
/// }
/// ```
///
/// Relative paths are relative to the bundle directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SandboxRequest {
    /// Files and directories the plugin may read (and execute).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<PathBuf>,
    /// Files and directories the plugin may write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<PathBuf>,
    /// TCP ports it may bind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bind_ports: Vec<u16>,
    /// TCP ports it may connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect_ports: Vec<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_ports_are_refused() {
        let parse = |v| serde_json::from_value::<SandboxRequest>(v).map_err(|e| e.to_string());
        assert!(
            parse(serde_json::json!({"reads": ["/x"]}))
                .unwrap_err()
                .contains("unknown field `reads`")
        );
        assert!(parse(serde_json::json!({"bind_ports": [70000]})).is_err());
        assert_eq!(
            parse(serde_json::json!({})).unwrap(),
            SandboxRequest::default()
        );
    }
}
