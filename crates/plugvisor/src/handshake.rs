//! go-plugin's handshake, host side: the environment a plugin is given, and the
//! line it answers with on stdout. Pure: no I/O.
//!
//! The line is `CORE|APP|NETWORK|ADDR|PROTOCOL[|SERVER_CERT[|MUX]]`.
//!
//! Stray stdout lines: go-plugin fails on the first line that is not a
//! handshake. plugvisor instead skips lines that do not start like one
//! (`<digits>|`), with a warning, because libraries that print a banner on
//! import are common in Python. A line that does start like a handshake must be
//! a valid one.

use serde::Serialize;

/// The go-plugin core protocol version. Only 1 exists.
pub(crate) const CORE_PROTOCOL_VERSION: u32 = 1;

/// What the host tells every plugin through its environment. Part of
/// [`crate::SupervisorConfig`], which builds and checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandshakeConfig {
    pub magic_cookie_key: String,
    pub magic_cookie_value: String,
    /// App protocol versions the host accepts.
    pub app_versions: Vec<u32>,
    pub min_port: u16,
    pub max_port: u16,
}

/// Mattermost's magic cookie, so Mattermost plugins run unchanged.
pub(crate) const DEFAULT_MAGIC_COOKIE: (&str, &str) =
    ("MATTERMOST_PLUGIN", "Securely message teams, anywhere.");

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            magic_cookie_key: DEFAULT_MAGIC_COOKIE.0.into(),
            magic_cookie_value: DEFAULT_MAGIC_COOKIE.1.into(),
            app_versions: crate::SupervisorConfig::DEFAULT_APP_VERSIONS.to_vec(),
            min_port: crate::SupervisorConfig::DEFAULT_PORT_RANGE.0,
            max_port: crate::SupervisorConfig::DEFAULT_PORT_RANGE.1,
        }
    }
}

impl HandshakeConfig {
    /// The variables added to the host's environment for the plugin.
    pub fn plugin_env(&self, unix_socket_dir: &str) -> Vec<(String, String)> {
        let versions = self
            .app_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        vec![
            (
                self.magic_cookie_key.clone(),
                self.magic_cookie_value.clone(),
            ),
            ("PLUGIN_PROTOCOL_VERSIONS".into(), versions),
            ("PLUGIN_MIN_PORT".into(), self.min_port.to_string()),
            ("PLUGIN_MAX_PORT".into(), self.max_port.to_string()),
            ("PLUGIN_UNIX_SOCKET_DIR".into(), unix_socket_dir.into()),
        ]
    }
}

/// How a plugin is reached, as its handshake says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Network {
    /// A TCP address, `HOST:PORT`.
    Tcp,
    /// A unix socket path.
    Unix,
}

/// A plugin's valid handshake answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handshake {
    /// The app protocol version the plugin speaks (one the host accepts).
    pub app_version: u32,
    /// Unix socket or TCP.
    pub network: Network,
    /// The socket path or `HOST:PORT` the plugin listens on.
    pub address: String,
    /// Base64 DER of the plugin's server certificate, for AutoMTLS.
    pub server_cert: Option<String>,
    /// Whether the plugin offered go-plugin's multiplexed broker (field 7);
    /// plugvisor does not use it.
    pub multiplexed: bool,
}

/// Why a handshake line was refused. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // the variants are their messages
pub enum HandshakeLineError {
    #[error("malformed handshake line {line:?}: expected CORE|APP|NETWORK|ADDR|PROTOCOL, {reason}")]
    Malformed { line: String, reason: String },
    #[error(
        "plugin speaks go-plugin core protocol {got}, but plugvisor speaks {CORE_PROTOCOL_VERSION}; rebuild the plugin with a current go-plugin or SDK"
    )]
    CoreVersion { got: String },
    #[error(
        "plugin offers app protocol version {got}, but this host accepts only {}; the plugin and host disagree on their API version",
        accepted.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    )]
    AppVersion { got: u32, accepted: Vec<u32> },
    #[error(
        "plugin speaks {protocol}; plugvisor supports gRPC plugins only{} (serve with go-plugin's GRPCServer, or use the plugvisor Python SDK)",
        if *.implied { " (its handshake has no protocol field, which go-plugin reads as netrpc)" } else { "" }
    )]
    UnsupportedProtocol { protocol: String, implied: bool },
    #[error("plugin asks for network {0:?}; plugvisor connects over \"unix\" or \"tcp\" only")]
    UnsupportedNetwork(String),
}

/// Whether a stdout line is meant as a handshake: it starts with digits and `|`.
/// Other lines before the handshake are skipped with a warning.
pub(crate) fn looks_like_handshake(line: &str) -> bool {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && line.as_bytes().get(digits) == Some(&b'|')
}

/// Parses a handshake line (without its newline) and checks it against the
/// versions the host accepts.
pub fn parse_handshake_line(
    line: &str,
    accepted_app_versions: &[u32],
) -> Result<Handshake, HandshakeLineError> {
    let line = line.trim_end_matches(['\r', '\n']).trim();
    let malformed = |reason: &str| HandshakeLineError::Malformed {
        line: line.chars().take(200).collect(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = line.split('|').collect();
    if parts.len() < 4 {
        return Err(malformed(&format!(
            "found {} field(s) separated by '|'",
            parts.len()
        )));
    }
    if parts[0] != CORE_PROTOCOL_VERSION.to_string() {
        return Err(HandshakeLineError::CoreVersion {
            got: parts[0].chars().take(20).collect(),
        });
    }
    let app_version: u32 = parts[1]
        .parse()
        .map_err(|_| malformed("the app version (field 2) is not a number"))?;
    // go-plugin reads a missing protocol field as netrpc.
    match parts.get(4).copied() {
        None | Some("") => {
            return Err(HandshakeLineError::UnsupportedProtocol {
                protocol: "netrpc".into(),
                implied: true,
            });
        }
        Some("grpc") => {}
        Some(other) => {
            return Err(HandshakeLineError::UnsupportedProtocol {
                protocol: other.chars().take(40).collect(),
                implied: false,
            });
        }
    }
    if !accepted_app_versions.contains(&app_version) {
        return Err(HandshakeLineError::AppVersion {
            got: app_version,
            accepted: accepted_app_versions.to_vec(),
        });
    }
    let network = match parts[2] {
        "tcp" => Network::Tcp,
        "unix" => Network::Unix,
        other => {
            return Err(HandshakeLineError::UnsupportedNetwork(
                other.chars().take(40).collect(),
            ));
        }
    };
    let address = parts[3].to_string();
    if address.is_empty() {
        return Err(malformed("the address (field 4) is empty"));
    }
    if network == Network::Tcp && address.parse::<std::net::SocketAddr>().is_err() {
        return Err(malformed("the tcp address (field 4) is not HOST:PORT"));
    }
    let server_cert = parts
        .get(5)
        .filter(|cert| !cert.is_empty())
        .map(|cert| cert.to_string());
    let multiplexed = parts.get(6) == Some(&"true");
    if parts.len() > 7 {
        return Err(malformed("found more than 7 fields"));
    }
    Ok(Handshake {
        app_version,
        network,
        address,
        server_cert,
        multiplexed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tcp_and_unix() {
        let tcp = parse_handshake_line("1|1|tcp|127.0.0.1:1234|grpc\n", &[1]).unwrap();
        assert_eq!(tcp.network, Network::Tcp);
        assert_eq!(tcp.address, "127.0.0.1:1234");
        assert_eq!(tcp.server_cert, None);
        let unix =
            parse_handshake_line("1|2|unix|/tmp/x/plugin.sock|grpc|CERT|true", &[1, 2]).unwrap();
        assert_eq!(unix.network, Network::Unix);
        assert_eq!(unix.app_version, 2);
        assert_eq!(unix.server_cert.as_deref(), Some("CERT"));
        assert!(unix.multiplexed);
        // go-plugin prints an empty cert field when there is no TLS.
        let empty_cert = parse_handshake_line("1|1|unix|/s|grpc|", &[1]).unwrap();
        assert_eq!(empty_cert.server_cert, None);
    }

    #[test]
    fn refuses_other_core_versions() {
        let err = parse_handshake_line("2|1|tcp|127.0.0.1:1|grpc", &[1]).unwrap_err();
        assert_eq!(err, HandshakeLineError::CoreVersion { got: "2".into() });
        assert!(err.to_string().contains("core protocol 2"));
    }

    #[test]
    fn refuses_unaccepted_app_versions() {
        let err = parse_handshake_line("1|7|tcp|127.0.0.1:1|grpc", &[1, 2]).unwrap_err();
        assert_eq!(
            err,
            HandshakeLineError::AppVersion {
                got: 7,
                accepted: vec![1, 2]
            }
        );
        assert!(err.to_string().contains("accepts only 1, 2"));
    }

    #[test]
    fn names_netrpc() {
        for line in ["1|1|tcp|127.0.0.1:1|netrpc", "1|1|tcp|127.0.0.1:1"] {
            let err = parse_handshake_line(line, &[1]).unwrap_err();
            assert!(
                err.to_string()
                    .contains("speaks netrpc; plugvisor supports gRPC plugins only"),
                "{err}"
            );
        }
    }

    #[test]
    fn malformed_lines() {
        for line in [
            "",
            "1|1|tcp",
            "1|x|tcp|127.0.0.1:1|grpc",
            "1|1|tcp||grpc",
            "1|1|tcp|nohost|grpc",
            "1|1|tcp|127.0.0.1:1|grpc|c|true|extra",
        ] {
            assert!(
                matches!(
                    parse_handshake_line(line, &[1]),
                    Err(HandshakeLineError::Malformed { .. })
                ),
                "{line:?}"
            );
        }
        assert!(matches!(
            parse_handshake_line("1|1|udp|x|grpc", &[1]),
            Err(HandshakeLineError::UnsupportedNetwork(_))
        ));
    }

    #[test]
    fn recognises_handshake_like_lines() {
        assert!(looks_like_handshake("1|1|tcp|a|grpc"));
        assert!(looks_like_handshake("12|"));
        assert!(!looks_like_handshake("Loading model..."));
        assert!(!looks_like_handshake("|1|"));
        assert!(!looks_like_handshake("2024-01-01 started"));
        assert!(!looks_like_handshake(""));
    }

    #[test]
    fn env_carries_cookie_versions_ports_and_socket_dir() {
        let config = HandshakeConfig {
            app_versions: vec![1, 2],
            ..HandshakeConfig::default()
        };
        let env = config.plugin_env("/run/x");
        assert!(env.contains(&(
            "MATTERMOST_PLUGIN".into(),
            "Securely message teams, anywhere.".into()
        )));
        assert!(env.contains(&("PLUGIN_PROTOCOL_VERSIONS".into(), "1,2".into())));
        assert!(env.contains(&("PLUGIN_MIN_PORT".into(), "10000".into())));
        assert!(env.contains(&("PLUGIN_MAX_PORT".into(), "25000".into())));
        assert!(env.contains(&("PLUGIN_UNIX_SOCKET_DIR".into(), "/run/x".into())));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for line in [
            "|||||||",
            "1|||||||",
            "1|99999999999|tcp|a|grpc",
            "1|1|unix|\u{0}|grpc",
            "\u{feff}1|1",
        ] {
            let _ = parse_handshake_line(line, &[1]);
        }
    }
}
