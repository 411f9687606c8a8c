//! The fake plugin's lifecycle hooks, broker and host API client, each able
//! to misbehave on request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use plugvisor::proto::plugin::ConnInfo;
use plugvisor::proto::plugin::grpc_broker_server::{GrpcBroker, GrpcBrokerServer};
use plugvisor::proto::plugvisor::v1 as pv;
use pv::key_value_client::KeyValueClient;
use pv::lifecycle_server::{Lifecycle, LifecycleServer};
use pv::log_client::LogClient;
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};

use super::{Flags, append};

/// The announcements the host made on the broker stream, by service id.
#[derive(Default)]
pub struct Announced {
    infos: Mutex<HashMap<u32, ConnInfo>>,
    changed: Notify,
}

impl Announced {
    async fn wait_for(&self, id: u32) -> Option<ConnInfo> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.changed.notified();
            if let Some(info) = self.infos.lock().unwrap().get(&id).cloned() {
                return Some(info);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

pub struct Broker {
    pub announced: Arc<Announced>,
    pub junk: usize,
}

type ConnInfoStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<ConnInfo, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl GrpcBroker for Broker {
    type StartStreamStream = ConnInfoStream;

    async fn start_stream(
        &self,
        request: Request<tonic::Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut incoming = request.into_inner();
        let announced = self.announced.clone();
        tokio::spawn(async move {
            while let Ok(Some(info)) = incoming.message().await {
                announced
                    .infos
                    .lock()
                    .unwrap()
                    .insert(info.service_id, info);
                announced.changed.notify_waiters();
            }
        });
        // Hostile: announce services of our own that the host never asked for.
        let junk = (0..self.junk).map(|i| {
            Ok(ConnInfo {
                service_id: 1000 + i as u32,
                network: "unix".into(),
                address: format!("/nonexistent/junk-{i}.sock"),
                knock: None,
            })
        });
        let stream =
            futures::stream::iter(junk.collect::<Vec<_>>()).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

use futures::StreamExt as _;

pub struct Hooks {
    pub flags: Flags,
    pub announced: Arc<Announced>,
}

impl Hooks {
    fn reported(&self) -> Vec<String> {
        let mut hooks: Vec<String> = self
            .flags
            .hooks
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if self.flags.http.is_some() {
            hooks.push("ServeHTTP".into());
        }
        hooks
    }

    fn log(&self, line: &str) {
        append(&self.flags.hook_log, line);
    }

    /// Hangs or answers garbage when asked to (garbage is served by a
    /// route of its own, see `garbage_route`).
    async fn misbehave(&self, hook: &str) {
        if self.flags.hook_hang.as_deref() == Some(hook) {
            std::future::pending::<()>().await;
        }
    }
}

#[tonic::async_trait]
impl Lifecycle for Hooks {
    async fn implemented(
        &self,
        _: Request<pv::ImplementedRequest>,
    ) -> Result<Response<pv::ImplementedResponse>, Status> {
        self.misbehave("Implemented").await;
        let mut services: Vec<String> = self.flags.services.clone();
        if self.flags.broker {
            services.push("plugin.GRPCBroker".into());
        }
        Ok(Response::new(pv::ImplementedResponse {
            hooks: self.reported(),
            services,
        }))
    }

    async fn on_activate(
        &self,
        request: Request<pv::OnActivateRequest>,
    ) -> Result<Response<pv::OnActivateResponse>, Status> {
        self.misbehave("OnActivate").await;
        let request = request.into_inner();
        self.log(&format!(
            "OnActivate {} broker={}",
            request.configuration_json, request.host_api_broker_id
        ));
        if request.host_api_broker_id != 0 && !self.flags.broker {
            // It claimed a broker it does not serve: no announcement can come.
            self.log("HOSTAPI no broker");
        } else if request.host_api_broker_id != 0 {
            match self.announced.wait_for(request.host_api_broker_id).await {
                Some(info) => self.use_host_api(&info).await,
                None => self.log("HOSTAPI no announcement"),
            }
        }
        let refused = self
            .flags
            .refuse_activation
            .clone()
            .map(|message| pv::Refusal { message });
        Ok(Response::new(pv::OnActivateResponse { refused }))
    }

    async fn on_configuration_change(
        &self,
        request: Request<pv::OnConfigurationChangeRequest>,
    ) -> Result<Response<pv::OnConfigurationChangeResponse>, Status> {
        self.misbehave("OnConfigurationChange").await;
        let json = request.into_inner().configuration_json;
        let config: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let refused = self
            .flags
            .refuse_config_key
            .as_ref()
            .filter(|key| config.get(key.as_str()) == Some(&serde_json::Value::Bool(true)))
            .map(|key| pv::Refusal {
                message: format!("{key} must not be true"),
            });
        if refused.is_none() {
            self.log(&format!("OnConfigurationChange {json}"));
        }
        Ok(Response::new(pv::OnConfigurationChangeResponse { refused }))
    }

    async fn on_deactivate(
        &self,
        _: Request<pv::OnDeactivateRequest>,
    ) -> Result<Response<pv::OnDeactivateResponse>, Status> {
        self.misbehave("OnDeactivate").await;
        self.log("OnDeactivate");
        Ok(Response::new(pv::OnDeactivateResponse {}))
    }
}

impl Hooks {
    /// What the flags ask the plugin to do with its host API.
    async fn use_host_api(&self, info: &ConnInfo) {
        let channel = match dial(&info.address).await {
            Ok(channel) => channel,
            Err(error) => return self.log(&format!("HOSTAPI dial failed: {error}")),
        };
        let mut kv = KeyValueClient::new(channel.clone());
        if let Some(key) = &self.flags.kv_counter {
            let count = loop {
                let current = kv
                    .get(pv::KvGetRequest { key: key.clone() })
                    .await
                    .map(|r| r.into_inner());
                let Ok(current) = current else {
                    return self.log(&format!("COUNT error {}", current.unwrap_err()));
                };
                let n: u64 = String::from_utf8_lossy(&current.value).parse().unwrap_or(0) + 1;
                let swap = pv::KvCompareAndSetRequest {
                    key: key.clone(),
                    expected: current.found.then_some(current.value),
                    value: Some(n.to_string().into_bytes()),
                };
                if kv
                    .compare_and_set(swap)
                    .await
                    .is_ok_and(|r| r.into_inner().swapped)
                {
                    break n;
                }
            };
            self.log(&format!("COUNT {count}"));
        }
        if let Some(key) = &self.flags.kv_read {
            let answer = kv.get(pv::KvGetRequest { key: key.clone() }).await;
            match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    self.log(&format!(
                        "READ {} {}",
                        r.found,
                        String::from_utf8_lossy(&r.value)
                    ));
                }
                Err(status) => self.log(&format!("READ error {status}")),
            }
        }
        if let Some((key, value)) = self
            .flags
            .kv_write
            .as_deref()
            .and_then(|kv| kv.split_once('='))
        {
            let set = pv::KvSetRequest {
                key: key.into(),
                value: value.as_bytes().to_vec(),
            };
            let answer = kv.set(set).await;
            self.log(&format!("WRITE {}", answer.is_ok()));
        }
        if let Some(bytes) = self.flags.kv_oversize {
            let set = pv::KvSetRequest {
                key: "oversize".into(),
                value: vec![7; bytes],
            };
            match kv.set(set).await {
                Ok(_) => self.log("OVERSIZE accepted"),
                Err(status) => self.log(&format!(
                    "OVERSIZE {:?} {}",
                    status.code(),
                    status.message()
                )),
            }
        }
        // Floods run after the activation has answered, so that a loaded
        // machine slows them down without failing the activation.
        let flags = self.flags.clone();
        let address = info.address.clone();
        tokio::spawn(async move { floods(flags, channel, kv, address).await });
    }
}

/// The flags' floods of the host API, logged to the hook log as they end.
async fn floods(flags: Flags, channel: Channel, kv: KeyValueClient<Channel>, address: String) {
    let log = |line: &str| append(&flags.hook_log, line);
    {
        if flags.kv_flood > 0 {
            let sets = (0..flags.kv_flood).map(|i| {
                let mut kv = kv.clone();
                async move {
                    kv.set(pv::KvSetRequest {
                        key: format!("flood/{i:06}"),
                        value: vec![1; 1024],
                    })
                    .await
                }
            });
            let results = futures::future::join_all(sets).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            let first = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .map(|s| format!("{:?} {}", s.code(), s.message()));
            log(&format!(
                "FLOOD ok={ok} err={} first={first:?}",
                results.len() - ok
            ));
        }
        if flags.log_flood > 0 {
            let client = LogClient::new(channel.clone());
            // All at once, as a burst.
            let writes = (0..flags.log_flood).map(|i| {
                let mut log = client.clone();
                async move {
                    log.write(pv::LogWriteRequest {
                        level: pv::LogLevel::Info as i32,
                        message: format!("flood line {i}"),
                        fields: Default::default(),
                    })
                    .await
                }
            });
            let started = std::time::Instant::now();
            let results = futures::future::join_all(writes).await;
            let elapsed_ms = started.elapsed().as_millis();
            let ok = results.iter().filter(|r| r.is_ok()).count();
            let exhausted = results
                .iter()
                .filter(|r| {
                    r.as_ref()
                        .is_err_and(|s| s.code() == tonic::Code::ResourceExhausted)
                })
                .count();
            let other = results.iter().find_map(|r| {
                r.as_ref()
                    .err()
                    .filter(|s| s.code() != tonic::Code::ResourceExhausted)
            });
            log(&format!(
                "LOGFLOOD ok={ok} exhausted={exhausted} ms={elapsed_ms} other={other:?}"
            ));
        }
        if let Some(message) = &flags.log_line {
            let mut fields = HashMap::new();
            fields.insert("source".to_string(), "fake".to_string());
            let line = pv::LogWriteRequest {
                level: pv::LogLevel::Warn as i32,
                message: message.clone(),
                fields,
            };
            let answer = LogClient::new(channel.clone()).write(line).await;
            log(&format!("LOGLINE {}", answer.is_ok()));
        }
        if flags.connections > 0 {
            let (mut ok, mut refused) = (0, 0);
            let mut held = Vec::new();
            for _ in 0..flags.connections {
                let attempt = async {
                    let channel = dial(&address).await?;
                    let mut kv = KeyValueClient::new(channel.clone());
                    kv.get(pv::KvGetRequest { key: "x".into() }).await?;
                    Ok::<_, Box<dyn std::error::Error>>(channel)
                };
                match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Ok(channel)) => {
                        ok += 1;
                        held.push(channel);
                    }
                    _ => refused += 1,
                }
            }
            log(&format!("CONNECTIONS ok={ok} refused={refused}"));
            // Kept open for the plugin's life, as a leaky plugin would.
            std::mem::forget(held);
        }
    }
}

async fn dial(address: &str) -> Result<Channel, tonic::transport::Error> {
    let address = address.to_string();
    Endpoint::from_static("http://host-api")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let address = address.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&address).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

/// Adds the lifecycle service, and the broker when asked for.
pub fn add_to(routes: tonic::service::Routes, flags: &Flags) -> tonic::service::Routes {
    let announced = Arc::new(Announced::default());
    let mut routes = routes.add_service(LifecycleServer::new(Hooks {
        flags: flags.clone(),
        announced: announced.clone(),
    }));
    if flags.broker {
        routes = routes.add_service(GrpcBrokerServer::new(Broker {
            announced,
            junk: flags.announce_junk,
        }));
    }
    if let Some(mode) = &flags.http {
        routes = routes.add_service(pv::http_server::HttpServer::new(Http {
            mode: mode.clone(),
        }));
    }
    if let Some(hook) = &flags.hook_garbage {
        let path = format!("/plugvisor.v1.Lifecycle/{hook}");
        let router = routes
            .into_axum_router()
            .route(&path, axum::routing::post(garbage));
        routes = tonic::service::Routes::from(router);
    }
    routes
}

/// A gRPC answer whose message is not a valid protobuf message.
async fn garbage() -> impl axum::response::IntoResponse {
    let payload = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0x0f];
    let mut frame = vec![0u8];
    frame.extend((payload.len() as u32).to_be_bytes());
    frame.extend(payload);
    let trailers = {
        let mut map = axum::http::HeaderMap::new();
        map.insert("grpc-status", "0".parse().unwrap());
        map
    };
    let body = http_body_util::StreamBody::new(futures::stream::iter(vec![
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(axum::body::Bytes::from(frame))),
        Ok(http_body::Frame::trailers(trailers)),
    ]));
    (
        [("content-type", "application/grpc")],
        axum::body::Body::new(body),
    )
}

/// The HTTP hook, as badly behaved as asked.
struct Http {
    mode: String,
}

type Parts = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pv::HttpResponsePart, Status>> + Send + 'static>,
>;

fn head(status: u32) -> pv::HttpResponsePart {
    pv::HttpResponsePart {
        part: Some(pv::http_response_part::Part::Head(pv::HttpResponseHead {
            status,
            headers: vec![pv::HttpHeader {
                name: "content-type".into(),
                value: b"text/plain".to_vec(),
            }],
        })),
    }
}

fn body(bytes: &[u8]) -> pv::HttpResponsePart {
    pv::HttpResponsePart {
        part: Some(pv::http_response_part::Part::Body(bytes.to_vec())),
    }
}

#[tonic::async_trait]
impl pv::http_server::Http for Http {
    type ServeHTTPStream = Parts;

    async fn serve_http(
        &self,
        request: Request<tonic::Streaming<pv::HttpRequestPart>>,
    ) -> Result<Response<Parts>, Status> {
        let mut parts = request.into_inner();
        let first = parts.message().await?;
        let parts: Parts = match self.mode.as_str() {
            "hang" => Box::pin(futures::stream::pending()),
            "bad-status" => Box::pin(futures::stream::iter([Ok(head(42))])),
            "body-first" => Box::pin(futures::stream::iter([Ok(body(b"oops")), Ok(head(200))])),
            "forever" => Box::pin(futures::stream::iter([Ok(head(200))]).chain(
                futures::stream::unfold(0u64, |n| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Some((Ok(body(format!("part {n}\n").as_bytes())), n + 1))
                }),
            )),
            _ => {
                let text = format!("{first:?}");
                Box::pin(futures::stream::iter([
                    Ok(head(200)),
                    Ok(body(text.as_bytes())),
                ]))
            }
        };
        Ok(Response::new(parts))
    }
}
