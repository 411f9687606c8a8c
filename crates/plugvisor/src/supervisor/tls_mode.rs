//! Whether a plugin must speak TLS, and what the host ended up speaking to it.

use serde::{Deserialize, Serialize};

use crate::handshake::{Handshake, Network};

/// Whether go-plugin's AutoMTLS is offered, and what a plugin that does not
/// take it up may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TlsMode {
    /// No certificate is offered; a plugin that answers with one is refused.
    Off,
    /// A certificate is offered to every plugin. A plugin that answers with
    /// its own gets mutual TLS; one on a unix socket in its private
    /// directory needs none; one serving plaintext TCP is accepted with a
    /// warning, since every local user can reach it.
    #[default]
    Auto,
    /// As `Auto`, but plaintext TCP, or a unix socket outside the plugin's
    /// private directory, is refused.
    Require,
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Off => "off",
            TlsMode::Auto => "auto",
            TlsMode::Require => "require",
        })
    }
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(TlsMode::Off),
            "auto" => Ok(TlsMode::Auto),
            "require" => Ok(TlsMode::Require),
            other => Err(format!(
                "unknown TLS mode {other:?}; expected auto, require or off"
            )),
        }
    }
}

impl TlsMode {
    /// Whether a client certificate is offered at all.
    pub(crate) fn offers_certificate(self) -> bool {
        self != TlsMode::Off
    }
}

/// How the host reaches a running plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Transport {
    /// Plaintext over a unix socket.
    #[serde(rename = "unix")]
    Unix,
    /// Mutual TLS over a unix socket.
    #[serde(rename = "unix+mtls")]
    UnixMtls,
    /// Plaintext over loopback TCP: any local user can reach the plugin.
    #[serde(rename = "tcp")]
    Tcp,
    /// Mutual TLS over TCP.
    #[serde(rename = "tcp+mtls")]
    TcpMtls,
}

impl Transport {
    pub(crate) fn of(handshake: &Handshake) -> Transport {
        match (handshake.network, handshake.server_cert.is_some()) {
            (Network::Unix, false) => Transport::Unix,
            (Network::Unix, true) => Transport::UnixMtls,
            (Network::Tcp, false) => Transport::Tcp,
            (Network::Tcp, true) => Transport::TcpMtls,
        }
    }

    /// Whether the connection is TLS.
    pub fn is_mtls(self) -> bool {
        matches!(self, Transport::UnixMtls | Transport::TcpMtls)
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Unix => "unix",
            Transport::UnixMtls => "unix+mtls",
            Transport::Tcp => "tcp",
            Transport::TcpMtls => "tcp+mtls",
        })
    }
}

/// What `mode` says of a plaintext connection to `handshake`'s address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plaintext {
    /// Fine: TLS, or a socket only the host's user can reach.
    Fine,
    /// Accepted, with this warning.
    Warn(&'static str),
    /// Refused.
    Refused,
}

/// Judges a connection that will not be TLS. `private_dir` is the plugin's
/// own 0700 socket directory.
pub(crate) fn judge_plaintext(
    mode: TlsMode,
    handshake: &Handshake,
    private_dir: &std::path::Path,
) -> Plaintext {
    if handshake.server_cert.is_some() || mode == TlsMode::Off {
        return Plaintext::Fine;
    }
    let private = handshake.network == Network::Unix
        && std::path::Path::new(&handshake.address).parent() == Some(private_dir);
    match (private, mode, handshake.network) {
        (true, _, _) => Plaintext::Fine,
        (false, TlsMode::Require, _) => Plaintext::Refused,
        (false, _, Network::Tcp) => Plaintext::Warn(
            "plugin serves plaintext tcp (it ignored PLUGIN_CLIENT_CERT): any local user can call it; \
             use a TLS-capable go-plugin or SDK, or --tls require to refuse such plugins",
        ),
        (false, _, Network::Unix) => Plaintext::Warn(
            "plugin serves plaintext on a unix socket outside its private directory (it ignored \
             PLUGIN_CLIENT_CERT): whoever can open that socket can call it",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(network: Network, address: &str, cert: bool) -> Handshake {
        let line = format!(
            "1|1|{}|{address}|grpc|{}",
            match network {
                Network::Unix => "unix",
                Network::Tcp => "tcp",
            },
            if cert { "MIIB" } else { "" }
        );
        crate::handshake::parse_handshake_line(&line, &[1]).unwrap()
    }

    #[test]
    fn plaintext_is_judged_by_mode_and_place() {
        let dir = std::path::Path::new("/run/pv/p1");
        let private = handshake(Network::Unix, "/run/pv/p1/plugin.sock", false);
        let elsewhere = handshake(Network::Unix, "/tmp/plugin.sock", false);
        let tcp = handshake(Network::Tcp, "127.0.0.1:1234", false);
        let tls = handshake(Network::Tcp, "127.0.0.1:1234", true);
        for mode in [TlsMode::Off, TlsMode::Auto, TlsMode::Require] {
            assert_eq!(judge_plaintext(mode, &private, dir), Plaintext::Fine);
            assert_eq!(judge_plaintext(mode, &tls, dir), Plaintext::Fine);
        }
        assert_eq!(judge_plaintext(TlsMode::Off, &tcp, dir), Plaintext::Fine);
        assert!(matches!(
            judge_plaintext(TlsMode::Auto, &tcp, dir),
            Plaintext::Warn(_)
        ));
        assert!(matches!(
            judge_plaintext(TlsMode::Auto, &elsewhere, dir),
            Plaintext::Warn(_)
        ));
        assert_eq!(
            judge_plaintext(TlsMode::Require, &tcp, dir),
            Plaintext::Refused
        );
        assert_eq!(
            judge_plaintext(TlsMode::Require, &elsewhere, dir),
            Plaintext::Refused
        );
    }

    #[test]
    fn transports_read_as_the_status_shows_them() {
        assert_eq!(
            Transport::of(&handshake(Network::Tcp, "127.0.0.1:1", true)).to_string(),
            "tcp+mtls"
        );
        assert_eq!(
            serde_json::to_string(&Transport::UnixMtls).unwrap(),
            "\"unix+mtls\""
        );
        assert_eq!("require".parse::<TlsMode>(), Ok(TlsMode::Require));
        assert!("yes".parse::<TlsMode>().is_err());
    }
}
