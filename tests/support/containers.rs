//! PostgreSQL and Redis in throwaway Docker containers, for machines that have a Docker engine
//! but no PostgreSQL or Redis of their own. Built only with the `docker` feature.

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// Running containers; dropping this stops and removes them.
pub struct Containers {
    _postgres: ContainerAsync<GenericImage>,
    _redis: ContainerAsync<GenericImage>,
}

/// The services' URLs, with the containers that serve them.
pub struct Started {
    pub containers: Containers,
    pub database_url: String,
    pub redis_url: String,
}

/// Starts PostgreSQL 16 and Redis 7 on ephemeral host ports.
pub async fn start() -> Result<Started, String> {
    // The image's entry point logs "ready" twice: once for its set-up server on standard error,
    // then for the real one on standard output. Only the second accepts connections for good.
    let postgres = GenericImage::new("postgres", "16")
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ))
        .with_wait_for(WaitFor::message_on_stdout(
            "database system is ready to accept connections",
        ))
        .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
        .start()
        .await
        .map_err(|error| format!("failed to start a PostgreSQL container: {error}"))?;
    let redis = GenericImage::new("redis", "7")
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .start()
        .await
        .map_err(|error| format!("failed to start a Redis container: {error}"))?;

    let database_url = format!(
        "postgres://postgres@{}/postgres",
        address(&postgres, 5432).await?
    );
    let redis_url = format!("redis://{}/0", address(&redis, 6379).await?);
    Ok(Started {
        containers: Containers {
            _postgres: postgres,
            _redis: redis,
        },
        database_url,
        redis_url,
    })
}

/// The `host:port` on which a container's port is published.
async fn address(container: &ContainerAsync<GenericImage>, port: u16) -> Result<String, String> {
    let host = container
        .get_host()
        .await
        .map_err(|error| format!("failed to read a container's host: {error}"))?;
    let port = container
        .get_host_port_ipv4(port.tcp())
        .await
        .map_err(|error| format!("failed to read a container's port: {error}"))?;
    Ok(format!("{host}:{port}"))
}
