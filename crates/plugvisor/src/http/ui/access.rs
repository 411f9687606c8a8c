//! Who may use the status page: the per-run token, the Host names it
//! answers to, and the check every request of the page and its API passes.
//!
//! A page on localhost is a target for every website its user visits: a
//! form posted from another origin (CSRF), or a name the attacker's DNS
//! points at 127.0.0.1 (DNS rebinding). So every change needs the token in
//! a header, which a browser sends cross-origin only after a CORS preflight
//! this server never answers; the page reads the token from its own HTML,
//! which another origin cannot read; and a request whose Host is not one of
//! the listener's own names is refused before anything else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::InvalidConfig;

/// The header every change must carry, with the token.
pub const TOKEN_HEADER: &str = "x-plugvisor-token";
/// The cookie a browser gets from the login URL when reads need the token
/// (`SameSite=Strict`, `HttpOnly`); it is never enough for a change.
pub(crate) const TOKEN_COOKIE: &str = "plugvisor_token";

/// Who may use the status page ([`crate::http::ui_router`]).
///
/// Built for the listener's address: a random token for this run, and the
/// Host names the page answers to (the address itself; `localhost`,
/// `127.0.0.1` and `[::1]` with its port; any IP address with its port when
/// the listener is on every interface). On a loopback address reading needs
/// no token (the Host check keeps rebinding pages out); elsewhere reading
/// needs it too.
#[derive(Clone)]
pub struct UiAccess {
    inner: Arc<Inner>,
}

struct Inner {
    token: String,
    port: u16,
    bound: String,
    any_ip: bool,
    loopback: bool,
    extra_hosts: Vec<String>,
}

impl std::fmt::Debug for UiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("UiAccess")
            .field("bound", &self.inner.bound)
            .field("reads_need_token", &self.reads_need_token())
            .field("extra_hosts", &self.inner.extra_hosts)
            .finish_non_exhaustive()
    }
}

/// A token shorter than this is refused: it has to withstand guessing.
const MIN_TOKEN_CHARS: usize = 16;

impl UiAccess {
    /// Access for a listener bound to `bound` (its real address, after the
    /// bind: port 0 is no port), with a random 256-bit token.
    pub fn for_listener(bound: SocketAddr) -> UiAccess {
        UiAccess::with(bound, random_token(), Vec::new())
    }

    fn with(bound: SocketAddr, token: String, extra_hosts: Vec<String>) -> UiAccess {
        UiAccess {
            inner: Arc::new(Inner {
                token,
                port: bound.port(),
                bound: bound.to_string().to_ascii_lowercase(),
                any_ip: bound.ip().is_unspecified(),
                loopback: bound.ip().is_loopback(),
                extra_hosts,
            }),
        }
    }

    /// Uses `token` (an operator's configured credential) instead of the
    /// random one: at least 16 characters, printable ASCII without spaces.
    pub fn with_token(self, token: &str) -> Result<UiAccess, InvalidConfig> {
        let token = token.trim();
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(InvalidConfig::new(
                "http-token-file",
                format!("the token must have at least {MIN_TOKEN_CHARS} characters"),
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidConfig::new(
                "http-token-file",
                "the token must be printable ASCII without spaces",
            ));
        }
        let inner = &self.inner;
        Ok(UiAccess {
            inner: Arc::new(Inner {
                token: token.to_string(),
                port: inner.port,
                bound: inner.bound.clone(),
                any_ip: inner.any_ip,
                loopback: inner.loopback,
                extra_hosts: inner.extra_hosts.clone(),
            }),
        })
    }

    /// Also answers to `host` (`name:port`, or a name alone for the
    /// listener's port), such as the name a reverse proxy passes on.
    pub fn allow_host(self, host: &str) -> UiAccess {
        let inner = &self.inner;
        let host = host.trim().to_ascii_lowercase();
        let host = match split_port(&host).1 {
            Some(_) => host,
            None => format!("{host}:{}", inner.port),
        };
        let mut extra_hosts = inner.extra_hosts.clone();
        extra_hosts.push(host);
        UiAccess {
            inner: Arc::new(Inner {
                token: inner.token.clone(),
                port: inner.port,
                bound: inner.bound.clone(),
                any_ip: inner.any_ip,
                loopback: inner.loopback,
                extra_hosts,
            }),
        }
    }

    /// The token: the page embeds it; scripts send it in the
    /// `X-Plugvisor-Token` header.
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// Whether reading (the page, its API, its events) needs the token too:
    /// when the listener is not on a loopback address.
    pub fn reads_need_token(&self) -> bool {
        !self.inner.loopback
    }

    /// The path that logs a browser in (`/?token=…`) when reads need the
    /// token: it sets a `SameSite=Strict` cookie and redirects to `/`.
    pub fn login_path(&self) -> String {
        format!("/?token={}", self.inner.token)
    }

    /// Whether `host` (a Host header) names this listener.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let inner = &self.inner;
        let (name, port) = split_port(&host);
        if port != Some(inner.port) {
            return false;
        }
        // No website can be served under these names: they are always this machine.
        if matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
            return true;
        }
        if host == inner.bound || inner.extra_hosts.contains(&host) {
            return true;
        }
        // On every interface: any address literal of this machine; a
        // rebinding page's Host is a DNS name, never an address.
        inner.any_ip && name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
    }

    fn token_matches(&self, candidate: &str) -> bool {
        constant_time_eq(candidate.as_bytes(), self.inner.token.as_bytes())
    }

    /// The token a request carries in the header (or as a bearer token).
    fn header_token(&self, headers: &HeaderMap) -> bool {
        let header = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        header.or(bearer).is_some_and(|t| self.token_matches(t))
    }

    fn cookie_token(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == TOKEN_COOKIE && self.token_matches(value))
    }

    /// The `?token=` of a login URL.
    pub(crate) fn query_token(&self, query: Option<&str>) -> bool {
        query
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .any(|(name, value)| name == "token" && self.token_matches(value))
    }
}

/// `name` and its port, if it has one (`[::1]:80`, `localhost:80`).
fn split_port(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.ends_with(':') && (!name.contains(':') || name.ends_with(']')) =>
        {
            (name, port.parse().ok())
        }
        _ => (host, None),
    }
}

/// Equal, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 bytes from the operating system's generator, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator failing at start-up leaves nothing safe to do.
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refused: a plain-text answer that says why, and what to do.
fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// The check in front of every route of the page: Host, Origin, token.
pub(crate) async fn guard(
    State(access): State<UiAccess>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| access.host_allowed(h)) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not the address plugvisor listens on (DNS rebinding is refused); use the address it printed, or allow the name with --http-host",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://").or(o.strip_prefix("https://")))
            .is_some_and(|o| access.host_allowed(o));
        if !same {
            return refuse(
                StatusCode::FORBIDDEN,
                "requests from another origin are refused",
            );
        }
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let navigation =
        headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) == Some("navigate");
    if matches!(site, Some("cross-site" | "same-site")) && !navigation {
        return refuse(
            StatusCode::FORBIDDEN,
            "requests from another site are refused",
        );
    }
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let allowed = if !reading {
        // Never a cookie: a browser sends it with a forged request too.
        access.header_token(headers)
    } else {
        !access.reads_need_token()
            || access.header_token(headers)
            || access.cookie_token(headers)
            || (request.uri().path() == "/" && access.query_token(request.uri().query()))
    };
    if !allowed {
        return match reading {
            true => refuse(
                StatusCode::UNAUTHORIZED,
                "this page needs the token: open the URL that plugvisor run printed (/?token=...), or send the X-Plugvisor-Token header",
            ),
            false => refuse(
                StatusCode::FORBIDDEN,
                "a change needs the X-Plugvisor-Token header with this run's token",
            ),
        };
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(bound: &str) -> UiAccess {
        UiAccess::for_listener(bound.parse().unwrap())
    }

    #[test]
    fn loopback_listener_answers_to_its_own_names_only() {
        let a = access("127.0.0.1:8065");
        for host in [
            "127.0.0.1:8065",
            "localhost:8065",
            "LOCALHOST:8065",
            "[::1]:8065",
        ] {
            assert!(a.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example:8065",
            "127.0.0.1:8066",
            "127.0.0.1",
            "localhost",
            "10.0.0.1:8065",
            "",
        ] {
            assert!(!a.host_allowed(host), "{host}");
        }
        assert!(!a.reads_need_token());
    }

    #[test]
    fn any_interface_takes_address_literals_and_allowed_names() {
        let a = access("0.0.0.0:80").allow_host("plugins.internal");
        assert!(a.reads_need_token());
        assert!(a.host_allowed("10.1.2.3:80"));
        assert!(a.host_allowed("[fe80::1]:80"));
        assert!(a.host_allowed("plugins.internal:80"));
        assert!(!a.host_allowed("rebind.example:80"));
        assert!(!a.host_allowed("10.1.2.3:81"));
        let b = access("192.168.1.5:80");
        assert!(b.host_allowed("192.168.1.5:80"));
        assert!(!b.host_allowed("10.1.2.3:80"));
    }

    #[test]
    fn tokens_are_random_and_configured_ones_checked() {
        let a = access("127.0.0.1:1");
        let b = access("127.0.0.1:1");
        assert_eq!(a.token().len(), 64);
        assert_ne!(a.token(), b.token());
        assert!(a.clone().with_token("short").is_err());
        assert!(a.clone().with_token("has a space in it, long").is_err());
        let c = a.with_token("  0123456789abcdef\n").unwrap();
        assert_eq!(c.token(), "0123456789abcdef");
        assert!(c.query_token(Some("x=1&token=0123456789abcdef")));
        assert!(!c.query_token(Some("token=0123456789abcdeg")));
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
