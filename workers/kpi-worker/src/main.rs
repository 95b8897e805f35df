//! The kpi-worker process: window settings from the environment, then the
//! shared worker loop until SIGTERM or SIGINT (exit 0; 2 for configuration).

#[tokio::main]
async fn main() {
    let worker = match kpi_worker::KpiWorker::from_env() {
        Ok(worker) => worker,
        Err(error) => {
            eprintln!("{}: {error}", kpi_worker::NAME);
            std::process::exit(2);
        }
    };
    std::process::exit(fleet_runtime::run_process(worker).await);
}
