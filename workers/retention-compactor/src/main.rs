//! The retention-compactor process: retention settings from the
//! environment, then one compaction per tick until SIGTERM or SIGINT. Exit
//! 0 after a clean stop, 2 on a configuration error, 1 on any other error.

#[tokio::main]
async fn main() {
    std::process::exit(retention_compactor::run_process().await);
}
