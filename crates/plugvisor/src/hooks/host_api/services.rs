//! The host API's services: what a plugin may ask of its host. Each instance
//! is bound to one plugin, whatever a request says.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use crate::proto::plugvisor::v1::configuration_server::Configuration;
use crate::proto::plugvisor::v1::key_value_server::KeyValue;
use crate::proto::plugvisor::v1::log_server::Log;
use crate::proto::plugvisor::v1::{
    ConfigurationGetRequest, ConfigurationGetResponse, KvCompareAndSetRequest,
    KvCompareAndSetResponse, KvDeleteRequest, KvDeleteResponse, KvGetRequest, KvGetResponse,
    KvListRequest, KvListResponse, KvSetRequest, KvSetResponse, LogLevel, LogWriteRequest,
    LogWriteResponse,
};
use crate::store::{Expect, KvError, Store};

/// Log lines per second a plugin may send through the host API, in bursts
/// of as many; beyond that they are refused (RESOURCE_EXHAUSTED).
pub(crate) const LOG_LINES_PER_SECOND: f64 = 1000.0;
/// Longest log message and field kept, and most fields per line.
const MAX_LOG_TEXT: usize = 16 * 1024;
const MAX_LOG_FIELDS: usize = 64;

fn status(error: KvError) -> Status {
    match error {
        KvError::InvalidKey(_) => Status::invalid_argument(error.to_string()),
        KvError::ValueTooLarge { .. } | KvError::QuotaExceeded { .. } => {
            Status::resource_exhausted(error.to_string())
        }
        KvError::Unavailable(_) => Status::unavailable(error.to_string()),
    }
}

/// `plugvisor.v1.KeyValue`, in one plugin's namespace.
pub(crate) struct KeyValueService {
    pub(crate) plugin: String,
    pub(crate) store: Store,
}

#[tonic::async_trait]
impl KeyValue for KeyValueService {
    async fn get(&self, request: Request<KvGetRequest>) -> Result<Response<KvGetResponse>, Status> {
        let key = request.into_inner().key;
        let value = self.store.get(&self.plugin, &key).await.map_err(status)?;
        Ok(Response::new(KvGetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn set(&self, request: Request<KvSetRequest>) -> Result<Response<KvSetResponse>, Status> {
        let request = request.into_inner();
        self.store
            .set(&self.plugin, &request.key, request.value)
            .await
            .map_err(status)?;
        Ok(Response::new(KvSetResponse {}))
    }

    async fn delete(
        &self,
        request: Request<KvDeleteRequest>,
    ) -> Result<Response<KvDeleteResponse>, Status> {
        let key = request.into_inner().key;
        let existed = self
            .store
            .delete(&self.plugin, &key)
            .await
            .map_err(status)?;
        Ok(Response::new(KvDeleteResponse { existed }))
    }

    async fn list(
        &self,
        request: Request<KvListRequest>,
    ) -> Result<Response<KvListResponse>, Status> {
        let request = request.into_inner();
        let (keys, more) = self
            .store
            .list(
                &self.plugin,
                &request.prefix,
                &request.start_after,
                request.limit as usize,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(KvListResponse { keys, more }))
    }

    async fn compare_and_set(
        &self,
        request: Request<KvCompareAndSetRequest>,
    ) -> Result<Response<KvCompareAndSetResponse>, Status> {
        let request = request.into_inner();
        let expected = match request.expected {
            Some(value) => Expect::Value(value),
            None => Expect::Absent,
        };
        let swapped = self
            .store
            .compare_and_set(&self.plugin, &request.key, expected, request.value)
            .await
            .map_err(status)?;
        Ok(Response::new(KvCompareAndSetResponse { swapped }))
    }
}

/// `plugvisor.v1.Configuration`: the plugin's effective configuration.
pub(crate) struct ConfigurationService {
    pub(crate) current: Arc<dyn Fn() -> String + Send + Sync>,
}

#[tonic::async_trait]
impl Configuration for ConfigurationService {
    async fn get(
        &self,
        _request: Request<ConfigurationGetRequest>,
    ) -> Result<Response<ConfigurationGetResponse>, Status> {
        Ok(Response::new(ConfigurationGetResponse {
            configuration_json: (self.current)(),
        }))
    }
}

/// `plugvisor.v1.Log`: lines into the host's log, in the plugin's span, as
/// its stderr lines are.
pub(crate) struct LogService {
    pub(crate) span: tracing::Span,
    pub(crate) bucket: Mutex<TokenBucket>,
}

#[tonic::async_trait]
impl Log for LogService {
    async fn write(
        &self,
        request: Request<LogWriteRequest>,
    ) -> Result<Response<LogWriteResponse>, Status> {
        let dropped = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Instant::now());
        if let Err(dropped) = dropped {
            if let Some(dropped) = dropped {
                self.span.in_scope(|| {
                    tracing::warn!(dropped, "the plugin logs more than {LOG_LINES_PER_SECOND} lines a second through the host API; lines are dropped")
                });
            }
            return Err(Status::resource_exhausted(format!(
                "log rate limit: {LOG_LINES_PER_SECOND} lines per second"
            )));
        }
        let request = request.into_inner();
        let mut fields: Vec<(String, String)> = request
            .fields
            .into_iter()
            .take(MAX_LOG_FIELDS)
            .map(|(k, v)| (cut(k), cut(v)))
            .collect();
        fields.sort();
        let fields: String = fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        let message = format!("{}{fields}", cut(request.message));
        let level = LogLevel::try_from(request.level).unwrap_or(LogLevel::Info);
        self.span.in_scope(|| match level {
            LogLevel::Trace => tracing::trace!(target: "plugin::host_api", "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin::host_api", "{message}"),
            LogLevel::Unspecified | LogLevel::Info => {
                tracing::info!(target: "plugin::host_api", "{message}")
            }
            LogLevel::Warn => tracing::warn!(target: "plugin::host_api", "{message}"),
            LogLevel::Error => tracing::error!(target: "plugin::host_api", "{message}"),
        });
        Ok(Response::new(LogWriteResponse {}))
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_LOG_TEXT {
        let mut end = MAX_LOG_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Allows `rate` events a second, in bursts of `rate`.
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
    dropped: u64,
    warned: Option<Instant>,
}

impl TokenBucket {
    pub(crate) fn new(rate: f64) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate,
            last: Instant::now(),
            dropped: 0,
            warned: None,
        }
    }

    /// Ok, or Err with the number dropped so far when it is time to warn
    /// about them again (at most once a second).
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Option<u64>> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        self.dropped += 1;
        let due = self
            .warned
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            self.warned = Some(now);
            return Err(Some(std::mem::take(&mut self.dropped)));
        }
        Err(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_and_warns_once_a_second() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3.0);
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        assert_eq!(bucket.take(start), Err(Some(1)));
        assert_eq!(bucket.take(start), Err(None));
        let later = start + Duration::from_millis(400);
        assert!(bucket.take(later).is_ok(), "1.2 tokens came back");
        assert_eq!(bucket.take(later), Err(None));
        assert_eq!(
            bucket.take(start + Duration::from_millis(1100)).ok(),
            Some(())
        );
    }
}
