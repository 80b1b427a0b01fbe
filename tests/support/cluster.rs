//! Several real `herald serve` processes sharing one PostgreSQL database and one Redis server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use herald_gateway::auth::TokenAuthority;
use herald_store::{SeaStore, StoreOptions};

use crate::{TEST_SECRET, TestDb, WsClient, seed};

/// One gateway process.
pub struct Instance {
    pub base: String,
    child: Child,
}

impl Instance {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws{}{}", self.base.trim_start_matches("http"), path)
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Gateways on loopback over one PostgreSQL test database and one Redis key prefix.
pub struct Cluster {
    pub instances: Vec<Instance>,
    pub store: SeaStore,
    pub tokens: Arc<TokenAuthority>,
    pub client: reqwest::Client,
    pub redis_url: String,
    _db: TestDb,
    _services: Services,
}

/// Where PostgreSQL and Redis come from: HERALD_TEST_DATABASE_URL and REDIS_URL when both are
/// set, else containers when the `docker` feature is on and a Docker engine is reachable.
struct Services {
    database_url: String,
    redis_url: String,
    #[cfg(feature = "docker")]
    _containers: Option<crate::containers::Containers>,
}

impl Services {
    async fn resolve() -> Option<Self> {
        if let (Ok(database_url), Ok(redis_url)) = (
            std::env::var("HERALD_TEST_DATABASE_URL"),
            std::env::var("REDIS_URL"),
        ) {
            return Some(Self {
                database_url,
                redis_url,
                #[cfg(feature = "docker")]
                _containers: None,
            });
        }

        #[cfg(feature = "docker")]
        match crate::containers::start().await {
            Ok(started) => Some(Self {
                database_url: started.database_url,
                redis_url: started.redis_url,
                _containers: Some(started.containers),
            }),
            Err(error) => {
                eprintln!(
                    "skipped: HERALD_TEST_DATABASE_URL and REDIS_URL are not both set, and {error}"
                );
                None
            }
        }

        #[cfg(not(feature = "docker"))]
        {
            eprintln!(
                "skipped: set HERALD_TEST_DATABASE_URL and REDIS_URL to run the multi-instance tests, or build them with --features herald-tests/docker on a machine with a Docker engine"
            );
            None
        }
    }
}

impl Cluster {
    /// Starts `count` instances, or returns `None` (printing why) when neither the environment
    /// nor Docker provides PostgreSQL and Redis.
    pub async fn start(count: usize) -> Option<Self> {
        let services = Services::resolve().await?;
        let db = TestDb::postgres_on(services.database_url.clone())
            .await
            .expect("create a PostgreSQL test database");
        let redis_url = services.redis_url.clone();

        let store = SeaStore::connect(db.url(), &StoreOptions::default())
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate");
        seed(&store).await.expect("seed");

        let binary = herald_binary();
        let prefix = format!(
            "herald-test:{}:{}:",
            std::process::id(),
            db.url().rsplit('/').next().unwrap_or("db")
        );
        let mut instances = Vec::with_capacity(count);
        for _ in 0..count {
            instances.push(spawn(&binary, db.url(), &redis_url, &prefix));
        }

        let tokens = Arc::new(
            TokenAuthority::hs256(TEST_SECRET, None, None, Duration::from_secs(3600))
                .expect("token authority"),
        );
        let cluster = Cluster {
            instances,
            store,
            tokens,
            client: reqwest::Client::new(),
            redis_url,
            _db: db,
            _services: services,
        };
        cluster.wait_ready().await;
        Some(cluster)
    }

    /// Waits until every instance reports ready with its broker connected.
    async fn wait_ready(&self) {
        for instance in &self.instances {
            let mut ready = false;
            for _ in 0..100 {
                if let Ok(response) = self.client.get(instance.url("/readyz")).send().await
                    && let Ok(body) = response.json::<serde_json::Value>().await
                    && body["broker"]["state"] == "connected"
                {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(ready, "{} did not become ready within 10 s", instance.base);
        }
    }

    /// Signs a token for a seeded user.
    pub async fn token(&self, username: &str) -> String {
        use herald_core::store::DirectoryStore;

        let user = self
            .store
            .find_user(&herald_core::Username::parse(username).expect("valid username"))
            .await
            .expect("load user")
            .unwrap_or_else(|| panic!("no seeded user {username}"));
        self.tokens
            .issue(&user, Duration::from_secs(3600))
            .expect("sign token")
            .0
    }

    /// Opens a socket on one instance as a seeded user.
    pub async fn ws(&self, instance: usize, user: &str, path: &str) -> WsClient {
        let bearer = format!("Bearer {}", self.token(user).await);
        WsClient::connect(
            &self.instances[instance].ws_url(path),
            &[("authorization", &bearer)],
        )
        .await
        .unwrap_or_else(|status| panic!("handshake on instance {instance} refused: {status}"))
    }
}

/// Starts one `herald serve` on an ephemeral loopback port and reads the port it printed.
fn spawn(binary: &PathBuf, database_url: &str, redis_url: &str, prefix: &str) -> Instance {
    let mut child = Command::new(binary)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HERALD_BIND", "127.0.0.1:0")
        .env("HERALD_DATABASE_URL", database_url)
        .env("HERALD_BROKER", redis_url)
        .env("HERALD_BROKER_PREFIX", prefix)
        .env(
            "HERALD_JWT_SECRET",
            std::str::from_utf8(TEST_SECRET).expect("ASCII secret"),
        )
        .env("HERALD_AUTO_MIGRATE", "false")
        .env("HERALD_RECONCILE_INTERVAL", "1s")
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start {}: {error}", binary.display()));

    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("herald exited before listening")
            .expect("read herald's output");
        if let Some(url) = line.strip_prefix("Herald is listening on ") {
            break url.trim_end_matches('/').to_owned();
        }
    };
    // Keep draining standard output so that the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Instance { base, child }
}

/// The `herald` binary of this build, built first when missing.
pub fn herald_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = profile_dir.join(format!("herald{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "herald-gateway", "--bin", "herald"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin herald failed");
    }
    binary
}
