//! The anomaly-detector process: scoring settings from the environment,
//! then the shared worker loop until SIGTERM or SIGINT. Exit 0 after a
//! clean stop, 2 on a configuration error, 1 on any other error.

#[tokio::main]
async fn main() {
    std::process::exit(anomaly_detector::run_process().await);
}
