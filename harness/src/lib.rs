//! fleetbench: builds the same fleet of workers as one image per worker and
//! as one image for all (and better strategies beside them), measures size,
//! build time and throughput, and reports.
//!
//! The binary is a thin layer over these modules; each owns one concern.

pub mod analyze;
pub mod bench;
pub mod bootstrap;
pub mod build;
pub mod cli;
pub mod config;
pub mod context;
pub mod docker;
pub mod feed;
pub mod gate;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod run;
pub mod services;
pub mod strategy;
pub mod telemetry;
pub mod tree;
pub mod units;
pub mod verify;
