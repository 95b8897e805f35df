//! The model-trainer process: epoch settings from the environment, then the
//! shared periodic loop until SIGTERM or SIGINT. Exit 0 after a clean stop,
//! 2 on a configuration error, 1 on any other error.

#[tokio::main]
async fn main() {
    std::process::exit(model_trainer::run_process().await);
}
