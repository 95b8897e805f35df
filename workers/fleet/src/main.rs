//! `fleet`: one binary for every worker. The worker is picked by the name
//! the binary is invoked as (a link named `kpi-worker`), or by the first
//! argument (`fleet kpi-worker`). Exit codes are the workers': 0 after a
//! clean stop, 2 for a configuration error or an unknown name, 1 otherwise.

use std::path::Path;

/// Workers this binary can run, by name.
const WORKERS: &[&str] = &[
    data_ingestor::NAME,
    kpi_worker::NAME,
    forecaster::NAME,
    sla_reporter::NAME,
    alert_manager::NAME,
    incident_correlator::NAME,
    anomaly_detector::NAME,
    model_trainer::NAME,
    retention_compactor::NAME,
];

/// The worker named by `argv[0]`'s file name, or else by `argv[1]`.
fn worker_name(args: &[String]) -> Option<&str> {
    let invoked = args
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .and_then(|name| name.to_str())?;
    if WORKERS.contains(&invoked) {
        return Some(invoked);
    }
    args.get(1).map(String::as_str)
}

async fn run(name: &str) -> i32 {
    match name {
        data_ingestor::NAME => data_ingestor::run_process().await,
        kpi_worker::NAME => kpi_worker::run_process().await,
        forecaster::NAME => forecaster::run_process().await,
        sla_reporter::NAME => sla_reporter::run_process().await,
        alert_manager::NAME => alert_manager::run_process().await,
        incident_correlator::NAME => incident_correlator::run_process().await,
        anomaly_detector::NAME => anomaly_detector::run_process().await,
        model_trainer::NAME => model_trainer::run_process().await,
        retention_compactor::NAME => retention_compactor::run_process().await,
        _ => {
            eprintln!(
                "fleet: unknown worker '{name}'; known: {}",
                WORKERS.join(", ")
            );
            2
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match worker_name(&args) {
        Some(name) => run(name).await,
        None => {
            eprintln!("usage: fleet WORKER (one of: {})", WORKERS.join(", "));
            2
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::worker_name;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_invoked_name_wins_over_the_first_argument() {
        assert_eq!(
            worker_name(&args(&["/usr/local/bin/kpi-worker", "x"])),
            Some("kpi-worker")
        );
    }

    #[test]
    fn the_first_argument_names_the_worker_of_the_fleet_binary() {
        assert_eq!(
            worker_name(&args(&["fleet", "data-ingestor"])),
            Some("data-ingestor")
        );
        assert_eq!(worker_name(&args(&["fleet"])), None);
    }
}
