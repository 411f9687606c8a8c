//! Fuzzes go-plugin's handshake line parser: `parse_handshake_line` and
//! `looks_like_handshake`, on arbitrary bytes read as (lossy) UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugvisor::handshake::{
    CORE_PROTOCOL_VERSION, Handshake, HandshakeLineError, Network, looks_like_handshake,
    parse_handshake_line,
};

const ACCEPTED: [&[u32]; 4] = [&[], &[1], &[1, 2], &[0, 7, u32::MAX]];

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let line = line.as_ref();

    let looks = looks_like_handshake(line);
    if looks {
        // `<digits>|`: the byte before the first '|' is a digit, and so is the first.
        assert!(line.as_bytes()[0].is_ascii_digit());
        assert!(line.contains('|'));
    }

    for accepted in ACCEPTED {
        match parse_handshake_line(line, accepted) {
            Ok(handshake) => check_ok(line, accepted, &handshake),
            Err(error) => check_err(&error),
        }
    }
});

fn check_ok(line: &str, accepted: &[u32], handshake: &Handshake) {
    assert!(accepted.contains(&handshake.app_version), "{line:?}");
    assert!(matches!(handshake.network, Network::Tcp | Network::Unix));
    assert!(!handshake.address.is_empty(), "{line:?}");
    assert!(!handshake.address.contains('|'));
    if handshake.network == Network::Tcp {
        assert!(handshake.address.parse::<std::net::SocketAddr>().is_ok());
    }
    assert_ne!(handshake.server_cert.as_deref(), Some(""));
    // The parser trims the line; what is left starts like a handshake, so the
    // host's stray-line filter does not skip a line the parser would accept.
    assert!(looks_like_handshake(line.trim()), "{line:?}");
    assert!(
        line.trim()
            .starts_with(&format!("{CORE_PROTOCOL_VERSION}|"))
    );

    // A canonical line built from the result parses to the same handshake.
    let network = match handshake.network {
        Network::Tcp => "tcp",
        Network::Unix => "unix",
    };
    let canonical = format!(
        "{CORE_PROTOCOL_VERSION}|{}|{network}|{}|grpc|{}|{}",
        handshake.app_version,
        handshake.address,
        handshake.server_cert.as_deref().unwrap_or(""),
        handshake.multiplexed,
    );
    let again = parse_handshake_line(&canonical, accepted)
        .unwrap_or_else(|e| panic!("{line:?} -> {canonical:?}: {e}"));
    assert_eq!(&again, handshake, "{line:?} -> {canonical:?}");
}

fn check_err(error: &HandshakeLineError) {
    let message = error.to_string();
    assert!(!message.is_empty());
    // Echoed input is bounded, so a huge line cannot make a huge error.
    match error {
        HandshakeLineError::Malformed { line, .. } => assert!(line.chars().count() <= 200),
        HandshakeLineError::CoreVersion { got } => {
            assert!(got.chars().count() <= 20);
            assert_ne!(got, &CORE_PROTOCOL_VERSION.to_string());
        }
        HandshakeLineError::UnsupportedProtocol { protocol, .. } => {
            assert!(protocol.chars().count() <= 40);
            assert_ne!(protocol, "grpc");
        }
        HandshakeLineError::UnsupportedNetwork(network) => {
            assert!(network.chars().count() <= 40);
            assert!(network != "tcp" && network != "unix");
        }
        HandshakeLineError::AppVersion { .. } => {}
    }
}
