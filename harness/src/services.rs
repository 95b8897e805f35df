//! The broker and PostgreSQL that tests and runtime benchmarks need, started
//! as containers with testcontainers from the configured images, or given as
//! addresses of services that already run.
//!
//! The local broker (tansu) has one advertised listener, so the broker
//! container also runs a tansu proxy that advertises the host's published
//! port: processes on the host use [`Broker::bootstrap_servers`], containers
//! on the same Docker network use [`Broker::network_bootstrap_servers`].
//! Containers are removed when the handles are dropped, also when a test
//! panics.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tracing::{debug, info};

use crate::config::{FleetConfig, ImageSource};
use crate::docker::{DockerError, Engine};

/// How long a service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The PostgreSQL user, password and database of started containers.
const PG_CREDENTIALS: &str = "fleetbench";

/// Errors starting or reaching a service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configured image is not on the engine and cannot be pulled.
    #[error(
        "image '{image}' for the {role} is not on the Docker Engine; \
         run `fleetbench bootstrap` first (or set images.{role}.source = \"registry\")"
    )]
    ImageMissing {
        /// The support role.
        role: &'static str,
        /// The image reference.
        image: String,
    },
    /// testcontainers could not start the container.
    #[error("starting the {role} container from '{image}': {source}")]
    Start {
        /// The support role.
        role: &'static str,
        /// The image reference.
        image: String,
        /// testcontainers' error.
        source: Box<testcontainers::TestcontainersError>,
    },
    /// The service started but did not answer in time.
    #[error("the {role} at {address} did not become ready within {timeout_s} s: {last_error}")]
    NotReady {
        /// The support role.
        role: &'static str,
        /// Where it was probed.
        address: String,
        /// The time allowed.
        timeout_s: u64,
        /// The last probe's failure.
        last_error: String,
    },
    /// A Kafka administrative request failed.
    #[error("{operation} on broker {brokers}: {message}")]
    Kafka {
        /// What was being done.
        operation: String,
        /// The bootstrap servers.
        brokers: String,
        /// The client's message.
        message: String,
    },
    /// The engine could not be asked about images.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// No free local port could be found.
    #[error("finding a free local port: {0}")]
    Port(std::io::Error),
}

/// A running Kafka-compatible broker.
pub struct Broker {
    /// Bootstrap servers for clients on this host.
    pub bootstrap_servers: String,
    /// Bootstrap servers for containers on the broker's Docker network.
    pub network_bootstrap_servers: String,
    container: Option<ContainerAsync<GenericImage>>,
}

/// A running PostgreSQL server.
pub struct Postgres {
    /// Connection URL for clients on this host.
    pub url: String,
    /// Connection URL for containers on the server's Docker network.
    pub network_url: String,
    container: Option<ContainerAsync<GenericImage>>,
}

/// Where to start services: the Docker network and the container names.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Docker network joined by the containers (created if missing).
    pub network: Option<String>,
    /// Name prefix of the containers, also their host names on the network.
    pub name_prefix: String,
}

impl Default for Placement {
    /// No network; a name prefix unique to this process and call.
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            network: None,
            name_prefix: format!("fleetbench-{}-{n}", std::process::id()),
        }
    }
}

impl Broker {
    /// Uses a broker that already runs; nothing is started or removed.
    pub fn existing(bootstrap_servers: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_string(),
            network_bootstrap_servers: bootstrap_servers.to_string(),
            container: None,
        }
    }

    /// Starts the configured broker image and waits until it serves metadata.
    pub async fn start(
        engine: &Engine,
        config: &FleetConfig,
        placement: &Placement,
    ) -> Result<Self, ServiceError> {
        let choice = &config.images.broker;
        let reference = choice.reference();
        require_image(engine, "broker", reference).await?;
        let host_port = free_port()?;
        let alias = format!("{}-broker", placement.name_prefix);
        let (name, tag) = split_reference(reference);
        let mut request = match choice.source {
            ImageSource::Local => GenericImage::new(name, tag)
                .with_exposed_port(9093.tcp())
                .with_wait_for(WaitFor::Nothing)
                .with_mapped_port(host_port, 9093.tcp())
                .with_env_var("ADVERTISED_LISTENER_URL", format!("tcp://{alias}:9092"))
                .with_env_var(
                    "HOST_ADVERTISED_LISTENER_URL",
                    format!("tcp://127.0.0.1:{host_port}"),
                ),
            ImageSource::Registry => apache_kafka(name, tag, &alias, host_port),
        }
        .with_container_name(&alias)
        .with_startup_timeout(READY_TIMEOUT);
        if let Some(network) = &placement.network {
            request = request.with_network(network);
        }
        let container = request.start().await.map_err(|e| ServiceError::Start {
            role: "broker",
            image: reference.to_string(),
            source: Box::new(e),
        })?;
        let broker = Self {
            bootstrap_servers: format!("127.0.0.1:{host_port}"),
            network_bootstrap_servers: format!("{alias}:9092"),
            container: Some(container),
        };
        broker.wait_ready().await?;
        info!(image = reference, brokers = %broker.bootstrap_servers, "broker ready");
        Ok(broker)
    }

    /// The container id, when this handle started the broker.
    pub fn container_id(&self) -> Option<&str> {
        self.container.as_ref().map(|c| c.id())
    }

    /// Polls metadata until the broker answers, never a fixed sleep.
    async fn wait_ready(&self) -> Result<(), ServiceError> {
        let brokers = self.bootstrap_servers.clone();
        let started = Instant::now();
        let mut last_error = String::from("no answer yet");
        while started.elapsed() < READY_TIMEOUT {
            let probe_brokers = brokers.clone();
            let probe = tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &probe_brokers)
                    .set("log_level", "3")
                    .create()
                    .map_err(|e| e.to_string())?;
                consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .map(|metadata| metadata.brokers().len())
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            match probe {
                Ok(count) if count > 0 => return Ok(()),
                Ok(_) => last_error = "metadata lists no broker".into(),
                Err(e) => last_error = e,
            }
            debug!(%brokers, %last_error, "broker not ready yet");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(ServiceError::NotReady {
            role: "broker",
            address: brokers,
            timeout_s: READY_TIMEOUT.as_secs(),
            last_error,
        })
    }

    /// Creates each topic with `partitions` partitions; existing ones are kept.
    pub async fn create_topics(
        &self,
        topics: &[&str],
        partitions: i32,
    ) -> Result<(), ServiceError> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        fleet_runtime::kafka::ensure_topics(&self.bootstrap_servers, &topics, partitions)
            .await
            .map_err(|e| ServiceError::Kafka {
                operation: e.operation,
                brokers: e.brokers,
                message: e.source.to_string(),
            })
    }
}

/// Environment of the public `apache/kafka` image in KRaft mode, with a
/// second listener advertised on the host's published port. Written from the
/// image's documentation; not exercised on machines without a registry.
fn apache_kafka(
    name: &str,
    tag: &str,
    alias: &str,
    host_port: u16,
) -> testcontainers::core::ContainerRequest<GenericImage> {
    let env = [
        ("KAFKA_NODE_ID", "1".to_string()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
        (
            "KAFKA_LISTENERS",
            "PLAINTEXT://:9092,HOST://:9093,CONTROLLER://:9094".into(),
        ),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://{alias}:9092,HOST://127.0.0.1:{host_port}"),
        ),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "PLAINTEXT:PLAINTEXT,HOST:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
        ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9094".into()),
        ("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT".into()),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".into()),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1".into()),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".into()),
    ];
    env.into_iter().fold(
        GenericImage::new(name, tag)
            .with_exposed_port(9093.tcp())
            .with_wait_for(WaitFor::Nothing)
            .with_mapped_port(host_port, 9093.tcp()),
        |request, (key, value)| request.with_env_var(key, value),
    )
}

impl Postgres {
    /// Uses a server that already runs; nothing is started or removed.
    pub fn existing(url: &str) -> Self {
        Self {
            url: url.to_string(),
            network_url: url.to_string(),
            container: None,
        }
    }

    /// Starts the configured PostgreSQL image and waits until it accepts a
    /// connection.
    pub async fn start(
        engine: &Engine,
        config: &FleetConfig,
        placement: &Placement,
    ) -> Result<Self, ServiceError> {
        let reference = config.images.postgres.reference();
        require_image(engine, "postgres", reference).await?;
        let alias = format!("{}-postgres", placement.name_prefix);
        let (name, tag) = split_reference(reference);
        let mut request = GenericImage::new(name, tag)
            .with_exposed_port(5432.tcp())
            .with_wait_for(WaitFor::message_on_stderr(
                "database system is ready to accept connections",
            ))
            .with_env_var("POSTGRES_USER", PG_CREDENTIALS)
            .with_env_var("POSTGRES_PASSWORD", PG_CREDENTIALS)
            .with_env_var("POSTGRES_DB", PG_CREDENTIALS)
            .with_container_name(&alias)
            .with_startup_timeout(READY_TIMEOUT);
        if let Some(network) = &placement.network {
            request = request.with_network(network);
        }
        let container = request.start().await.map_err(|e| ServiceError::Start {
            role: "postgres",
            image: reference.to_string(),
            source: Box::new(e),
        })?;
        let port = container
            .get_host_port_ipv4(5432.tcp())
            .await
            .map_err(|e| ServiceError::Start {
                role: "postgres",
                image: reference.to_string(),
                source: Box::new(e),
            })?;
        let url_for = |host: &str, port: u16| {
            format!("postgres://{PG_CREDENTIALS}:{PG_CREDENTIALS}@{host}:{port}/{PG_CREDENTIALS}")
        };
        let postgres = Self {
            url: url_for("127.0.0.1", port),
            network_url: url_for(&alias, 5432),
            container: Some(container),
        };
        postgres.wait_ready().await?;
        info!(image = reference, port, "postgres ready");
        Ok(postgres)
    }

    /// The container id, when this handle started the server.
    pub fn container_id(&self) -> Option<&str> {
        self.container.as_ref().map(|c| c.id())
    }

    /// Connects until a query succeeds: the log line comes a moment before
    /// the server takes TCP connections on some versions.
    async fn wait_ready(&self) -> Result<(), ServiceError> {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < READY_TIMEOUT {
            match sqlx::PgPool::connect(&self.url).await {
                Ok(pool) => match sqlx::query("SELECT 1").execute(&pool).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ServiceError::NotReady {
            role: "postgres",
            address: self.url.clone(),
            timeout_s: READY_TIMEOUT.as_secs(),
            last_error,
        })
    }
}

/// Fails early, with the command to run, when a service image is missing:
/// without a registry a pull could only fail later with a vaguer message.
async fn require_image(
    engine: &Engine,
    role: &'static str,
    image: &str,
) -> Result<(), ServiceError> {
    match engine.image_facts(image).await? {
        Some(_) => Ok(()),
        None => Err(ServiceError::ImageMissing {
            role,
            image: image.to_string(),
        }),
    }
}

/// Splits `registry:5000/name:tag` into name and tag (`latest` if none).
pub fn split_reference(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16, ServiceError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ServiceError::Port)?;
    Ok(listener.local_addr().map_err(ServiceError::Port)?.port())
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_at_the_tag_not_at_a_registry_port() {
        assert_eq!(split_reference("postgres:15"), ("postgres", "15"));
        assert_eq!(
            split_reference("fleetbench/base"),
            ("fleetbench/base", "latest")
        );
        assert_eq!(
            split_reference("registry.local:5000/team/kafka:3.9"),
            ("registry.local:5000/team/kafka", "3.9")
        );
        assert_eq!(
            split_reference("registry.local:5000/team/kafka"),
            ("registry.local:5000/team/kafka", "latest")
        );
    }
}
