//! `/plugins/{id}/...`: each request is streamed to the plugin's HTTP hook
//! (`plugvisor.v1.Http/ServeHTTP`) and its answer streamed back, body chunk
//! by body chunk, with HTTP/2 flow control between host and plugin: neither
//! a slow client nor a slow plugin makes the host hold a whole body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::StreamExt;
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::HttpLimits;
use crate::Environment;
use crate::environment::HttpTarget;
use crate::proto::plugvisor::v1::http_client::HttpClient;
use crate::proto::plugvisor::v1::http_request_part::Part as RequestPart;
use crate::proto::plugvisor::v1::http_response_part::Part as ResponsePart;
use crate::proto::plugvisor::v1::{
    HttpHeader, HttpRequestHead, HttpRequestPart, HttpResponseHead, HttpResponsePart,
};

/// Largest request body part sent to a plugin (grpcio's default message
/// limit is 4 MiB; small parts keep the pipe moving).
const MAX_PART: usize = 64 << 10;
/// Request body parts in flight to the plugin before the host stops reading.
const PARTS_IN_FLIGHT: usize = 4;
/// Seconds a client is told to wait for a plugin that is not running.
const RETRY_AFTER: &str = "1";

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

struct Proxy {
    env: Environment,
    limits: HttpLimits,
}

pub(crate) fn routes(env: Environment, limits: HttpLimits) -> Router {
    let proxy = Arc::new(Proxy { env, limits });
    Router::new()
        .route("/plugins/{id}", any(add_slash))
        .route("/plugins/{id}/", any(handle))
        .route("/plugins/{id}/{*rest}", any(handle))
        .with_state(proxy)
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// `/plugins/hello` → `/plugins/hello/`, so that the plugin's relative links work.
async fn add_slash(request: Request) -> Response {
    let uri = request.uri();
    let location = match uri.query() {
        Some(query) => format!("{}/?{query}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let after = &path["/plugins/".len()..];
    let (id, rest) = after.split_at(after.find('/').unwrap_or(after.len()));
    let id = id.to_string();
    let response = proxy.forward(&id, rest, request).await;
    let status = response.status();
    // A response whose body breaks off is counted again as "aborted".
    proxy.env.measurements().http_request(&id, status.as_str());
    response
}

impl Proxy {
    async fn forward(self: &Arc<Self>, id: &str, rest: &str, request: Request) -> Response {
        let channel = match self.env.http_target(id) {
            Ok(channel) => channel,
            Err(HttpTarget::Unknown) => {
                return plain(StatusCode::NOT_FOUND, format!("no plugin {id:?} here"));
            }
            Err(HttpTarget::NotRunning(state)) => {
                let mut response = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("plugin {id:?} is {state}, not Running; try again shortly"),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
                return response;
            }
            Err(HttpTarget::NoHttp) => {
                return plain(
                    StatusCode::NOT_FOUND,
                    format!("plugin {id:?} serves no HTTP"),
                );
            }
        };
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if header_bytes > self.limits.max_header_bytes {
            return plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request's headers are {header_bytes} bytes, over the limit of {}",
                    self.limits.max_header_bytes
                ),
            );
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.limits.max_body_bytes) {
            return self.too_large();
        }
        let head = request_head(id, rest, &request);
        let (parts, incoming) = mpsc::channel(PARTS_IN_FLIGHT);
        let _ = parts
            .send(HttpRequestPart {
                part: Some(RequestPart::Head(head)),
            })
            .await;
        let over_limit = Arc::new(Limit::default());
        let body = tokio::spawn(forward_body(
            request.into_body(),
            parts,
            self.limits.max_body_bytes,
            over_limit.clone(),
        ));
        let body = AbortOnDrop(body);
        let mut client = HttpClient::new(channel)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20);
        let call = async {
            let mut answer = client
                .serve_http(ReceiverStream::new(incoming))
                .await?
                .into_inner();
            let first = answer.message().await?;
            Ok::<_, tonic::Status>((answer, first))
        };
        let answered = tokio::select! {
            answered = tokio::time::timeout(self.limits.request_timeout, call) => answered,
            _ = over_limit.reached() => return self.too_large(),
        };
        let (answer, head) = match answered {
            Err(_) => {
                return plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "plugin {id:?} did not answer within {:?}",
                        self.limits.request_timeout
                    ),
                );
            }
            Ok(Err(status)) => {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "plugin {id:?} failed the request: {:?}: {}",
                        status.code(),
                        status.message()
                    ),
                );
            }
            Ok(Ok((_, None))) => {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("plugin {id:?} ended its answer before its head"),
                );
            }
            Ok(Ok((answer, Some(first)))) => match first.part {
                Some(ResponsePart::Head(head)) => (answer, head),
                _ => {
                    return plain(
                        StatusCode::BAD_GATEWAY,
                        format!("plugin {id:?} answered with a body before its head"),
                    );
                }
            },
        };
        match response_head(&head) {
            Ok((status, headers)) => {
                let stream = body_stream(answer, over_limit, body, self.clone(), id.to_string());
                let mut response = Response::new(Body::from_stream(stream));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                response
            }
            Err(problem) => plain(StatusCode::BAD_GATEWAY, format!("plugin {id:?} {problem}")),
        }
    }

    fn too_large(&self) -> Response {
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over the limit of {} bytes",
                self.limits.max_body_bytes
            ),
        )
    }
}

/// Set once the request body passes its limit.
#[derive(Default)]
struct Limit {
    passed: AtomicBool,
    notify: Notify,
}

impl Limit {
    fn pass(&self) {
        self.passed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn reached(&self) {
        loop {
            let notified = self.notify.notified();
            if self.passed.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// Aborts the request body's forwarding when the response is done with.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the request body as the plugin takes it, in parts of at most
/// [`MAX_PART`]. The end of the body is the end of the request stream; a
/// body over the limit, or one that breaks off, never ends it: the call is
/// cancelled instead.
async fn forward_body(
    mut body: Body,
    parts: mpsc::Sender<HttpRequestPart>,
    limit: u64,
    over_limit: Arc<Limit>,
) {
    let mut total: u64 = 0;
    loop {
        let frame = match body.frame().await {
            None => return,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                tracing::debug!(%error, "the client's request body broke off");
                std::future::pending::<()>().await;
                return;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len() as u64;
        if total > limit {
            over_limit.pass();
            std::future::pending::<()>().await;
        }
        for chunk in data.chunks(MAX_PART) {
            let part = HttpRequestPart {
                part: Some(RequestPart::Body(chunk.to_vec())),
            };
            if parts.send(part).await.is_err() {
                return; // the plugin is done with the request
            }
        }
    }
}

/// The response body: the plugin's body parts as they come. A call that
/// ends with an error, or a request body past its limit, ends the stream
/// with an error, so that the client sees a broken response, never a
/// complete-looking one.
fn body_stream(
    answer: Streaming<HttpResponsePart>,
    over_limit: Arc<Limit>,
    request_body: AbortOnDrop,
    proxy: Arc<Proxy>,
    id: String,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct Answer {
        parts: Streaming<HttpResponsePart>,
        over_limit: Arc<Limit>,
        _request_body: AbortOnDrop,
        proxy: Arc<Proxy>,
        id: String,
        done: bool,
    }
    let state = Answer {
        parts: answer,
        over_limit,
        _request_body: request_body,
        proxy,
        id,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            let next = tokio::select! {
                next = state.parts.message() => next,
                _ = state.over_limit.reached() => Err(tonic::Status::resource_exhausted("the request body passed its limit")),
            };
            let failure = match next {
                Ok(Some(HttpResponsePart { part: Some(ResponsePart::Body(bytes)) })) => {
                    return Some((Ok(Bytes::from(bytes)), state));
                }
                Ok(Some(HttpResponsePart { part: Some(ResponsePart::Flush(_)) })) => continue,
                Ok(Some(_)) => "sent a second head or an empty part".to_string(),
                Ok(None) => return None,
                Err(status) => format!("failed mid-response: {:?}: {}", status.code(), status.message()),
            };
            tracing::warn!(plugin = %state.id, "plugin {:?} {failure}; aborting the response", state.id);
            state.proxy.env.measurements().http_request(&state.id, "aborted");
            state.done = true;
            return Some((Err(std::io::Error::other(failure)), state));
        }
    })
    .map(|item| item)
}

fn request_head(id: &str, rest: &str, request: &Request) -> HttpRequestHead {
    let uri = request.uri();
    let connection_tokens: Vec<String> = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let mut headers: Vec<HttpHeader> = request
        .headers()
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !HOP_BY_HOP.contains(&name) && !connection_tokens.iter().any(|t| t == name)
        })
        .map(|(name, value)| HttpHeader {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    // HTTP/2 carries the host in the URI, not in a header.
    if !request.headers().contains_key(header::HOST)
        && let Some(authority) = uri.authority()
    {
        headers.push(HttpHeader {
            name: "host".into(),
            value: authority.as_str().as_bytes().to_vec(),
        });
    }
    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    HttpRequestHead {
        method: request.method().as_str().to_string(),
        path: if rest.is_empty() {
            "/".into()
        } else {
            rest.to_string()
        },
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        remote_addr,
        plugin_id: id.to_string(),
        mount_path: format!("/plugins/{id}"),
        http_version: format!("{:?}", request.version()),
        scheme: uri.scheme_str().unwrap_or("http").to_string(),
    }
}

/// The plugin's status and headers, checked; hop-by-hop headers dropped
/// (hyper frames the body itself).
fn response_head(head: &HttpResponseHead) -> Result<(StatusCode, HeaderMap), String> {
    let status = u16::try_from(head.status)
        .ok()
        .filter(|s| (200..=999).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            format!(
                "answered with status {}, which is not a final HTTP status",
                head.status
            )
        })?;
    let mut headers = HeaderMap::new();
    for h in &head.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            format!(
                "sent an invalid header name {:?}",
                h.name.chars().take(100).collect::<String>()
            )
        })?;
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_bytes(&h.value)
            .map_err(|_| format!("sent an invalid value for header {name}"))?;
        headers.append(name, value);
    }
    Ok((status, headers))
}
