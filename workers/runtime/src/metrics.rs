//! Prometheus metrics of one worker, and the HTTP endpoint that serves them
//! beside `/healthz` on one port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry, TextEncoder,
};

use crate::shutdown::Shutdown;

/// The counters every worker exports, labelled with its name.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events read from the input topics.
    pub events_in: IntCounter,
    /// Events published to the output topics.
    pub events_out: IntCounter,
    /// Batches that failed and were retried.
    pub errors: IntCounter,
    /// Messages sent to a dead-letter topic.
    pub dead_letters: IntCounter,
    /// Seconds from a batch's first message to its committed offsets.
    pub batch_seconds: Histogram,
    /// Messages behind the high watermark of the assigned partitions.
    pub consumer_lag: IntGauge,
    ready: Arc<AtomicBool>,
}

impl Metrics {
    /// Registers the metrics of `worker`.
    pub fn new(worker: &str) -> Self {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("worker", worker);
        let counter = |name: &str, help: &str| {
            let counter =
                IntCounter::with_opts(opts(name, help)).expect("metric options are valid");
            registry
                .register(Box::new(counter.clone()))
                .expect("each metric is registered once");
            counter
        };
        let events_in = counter("fleet_events_in_total", "Events read from input topics");
        let events_out = counter(
            "fleet_events_out_total",
            "Events published to output topics",
        );
        let errors = counter(
            "fleet_batch_errors_total",
            "Batches that failed and were retried",
        );
        let dead_letters = counter(
            "fleet_dead_letters_total",
            "Messages sent to a dead-letter topic",
        );
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fleet_batch_seconds",
                "Seconds to process and commit one batch",
            )
            .const_label("worker", worker)
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16).expect("buckets are valid")),
        )
        .expect("histogram options are valid");
        registry
            .register(Box::new(batch_seconds.clone()))
            .expect("each metric is registered once");
        let consumer_lag = IntGauge::with_opts(opts(
            "fleet_consumer_lag",
            "Messages behind the high watermark",
        ))
        .expect("metric options are valid");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("each metric is registered once");
        Self {
            registry,
            events_in,
            events_out,
            errors,
            dead_letters,
            batch_seconds,
            consumer_lag,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the worker ready (or not): `/healthz` answers 200 only when ready.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding into memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

async fn render_metrics(State(metrics): State<Metrics>) -> String {
    metrics.render()
}

async fn healthz(State(metrics): State<Metrics>) -> (StatusCode, &'static str) {
    if metrics.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` until the shutdown;
/// returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    mut shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .with_state(metrics);
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.requested().await })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_carry_the_worker_label() {
        let metrics = Metrics::new("kpi-worker");
        metrics.events_in.inc_by(3);
        let text = metrics.render();
        assert!(
            text.contains("fleet_events_in_total{worker=\"kpi-worker\"} 3"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn healthz_answers_503_until_ready_then_200() {
        let metrics = Metrics::new("w");
        let (trigger, shutdown) = crate::shutdown::channel();
        let addr = serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), shutdown)
            .await
            .unwrap();
        let status = |addr: SocketAddr| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response.split_whitespace().nth(1).unwrap().to_string()
        };
        assert_eq!(status(addr).await, "503");
        metrics.set_ready(true);
        assert_eq!(status(addr).await, "200");
        trigger.trip();
    }
}
