//! Prometheus metrics: the names, the recorder, the `/metrics` route and the HTTP middleware.
//!
//! Code records through the `metrics` facade; this module installs the Prometheus recorder once
//! per process and renders its text format. Label values come from fixed sets (routes, groups,
//! close reasons), so the number of series stays bounded.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_core::{
    Broker, BrokerError, Envelope, GroupName, SignalSubscription, Subscription, UserSignal,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open sockets per group (gauge, label `group`).
pub const SOCKETS_OPEN: &str = "herald_sockets_open";
/// Open WebSocket connections (gauge).
pub const CONNECTIONS_OPEN: &str = "herald_connections_open";
/// Sockets closed by the server or the client (counter, label `reason`).
pub const SOCKETS_CLOSED: &str = "herald_sockets_closed_total";
/// Events this instance published to the broker (counter, label `result`: ok or failed).
pub const EVENTS_PUBLISHED: &str = "herald_events_published_total";
/// Event frames written to sockets (counter).
pub const EVENTS_DELIVERED: &str = "herald_events_delivered_total";
/// Time to hand one event to every local socket of its group (histogram, seconds).
pub const BROADCAST_DURATION: &str = "herald_broadcast_duration_seconds";
/// Events read from storage because the broker lost or delayed them (counter).
pub const EVENTS_BACKFILLED: &str = "herald_events_backfilled_total";
/// HTTP requests (counter, labels `method`, `route`, `status`).
pub const HTTP_REQUESTS: &str = "herald_http_requests_total";
/// HTTP request latency (histogram, seconds, labels `method`, `route`).
pub const HTTP_DURATION: &str = "herald_http_request_duration_seconds";

/// Histogram buckets in seconds, from 50 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Buckets of the writes per shared transaction, up to the write queue's batch limit of 64.
const WRITE_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder on first use and returns its handle. Must first be called
/// inside a Tokio runtime, which runs the recorder's upkeep.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("buckets are not empty")
            .set_buckets_for_metric(
                Matcher::Full(herald_store::WRITE_BATCH_SIZE.into()),
                WRITE_BATCH_BUCKETS,
            )
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            // Another recorder was installed first; this handle then renders nothing.
            tracing::warn!(%error, "failed to install the metrics recorder");
        }

        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(5));
            loop {
                interval.tick().await;
                upkeep.run_upkeep();
            }
        });
        handle
    })
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub async fn render() -> Response {
    let body = handle().render();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Counts each request and records its latency by route template, never by raw path.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();

    let response = next.run(request).await;

    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A broker that counts what it publishes, around any other broker.
pub struct MeteredBroker {
    inner: Arc<dyn Broker>,
}

impl MeteredBroker {
    pub fn new(inner: Arc<dyn Broker>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl Broker for MeteredBroker {
    async fn publish(&self, envelope: Envelope) -> Result<(), BrokerError> {
        let result = self.inner.publish(envelope).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!(EVENTS_PUBLISHED, "result" => outcome).increment(1);
        result
    }

    async fn subscribe(&self, group: &GroupName) -> Result<Subscription, BrokerError> {
        self.inner.subscribe(group).await
    }

    async fn signal_user(&self, signal: UserSignal) -> Result<(), BrokerError> {
        self.inner.signal_user(signal).await
    }

    async fn subscribe_signals(&self) -> Result<SignalSubscription, BrokerError> {
        self.inner.subscribe_signals().await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }
}
