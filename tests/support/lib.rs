//! Shared test support: a real gateway on 127.0.0.1:0 over a fresh database.
//!
//! Every test gets its own database: a temporary SQLite file, or, when HERALD_TEST_DATABASE_URL
//! names a PostgreSQL server, a new database created on it and dropped afterwards. The
//! [`backend_tests!`] macro runs a test body once per backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use herald_core::store::{DirectoryStore, UserRecord};
use herald_core::{GroupName, MemoryBroker, NotificationService, SendRule, Username};
use herald_gateway::app::{self, AppState, HttpOptions};
use herald_gateway::auth::TokenAuthority;
use herald_gateway::metrics::MeteredBroker;
use herald_gateway::realtime::{Hub, RealtimeOptions};
use herald_gateway::routes::web::WebSource;
use herald_store::{SeaStore, StoreOptions};
use sea_orm::ConnectionTrait;
use serde_json::Value;
use tokio::sync::oneshot;

pub use reqwest::StatusCode;
pub use ws::{Closed, WsClient};

pub mod cluster;
#[cfg(feature = "docker")]
pub mod containers;
pub mod ws;

/// The HS256 secret every test gateway signs with.
pub const TEST_SECRET: &[u8] = b"test-secret-that-is-at-least-32-bytes-long";

/// Password of the users that tests log in as.
pub const TEST_PASSWORD: &str = "correct horse battery";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once on SQLite and once on PostgreSQL, as two named tests.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($app:ident: TestApp) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $app = $crate::TestApp::spawn($crate::Backend::Sqlite).await.expect("sqlite test app");
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some($app) = $crate::TestApp::spawn_postgres().await else { return };
                    $body
                }
            )*
        }
    };
}

/// A database that exists for one test.
pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("herald.db").display()
        );
        Ok(TestDb::Sqlite { _dir: dir, url })
    }

    /// Creates a fresh database on the server named by HERALD_TEST_DATABASE_URL, or returns
    /// `None` (printing why) when it is not set.
    pub async fn postgres() -> anyhow::Result<Option<Self>> {
        let Ok(admin_url) = std::env::var("HERALD_TEST_DATABASE_URL") else {
            eprintln!(
                "skipped: set HERALD_TEST_DATABASE_URL=postgres://USER@HOST/DB to run the PostgreSQL tests"
            );
            return Ok(None);
        };
        Self::postgres_on(admin_url).await.map(Some)
    }

    /// Creates a fresh database on the PostgreSQL server that `admin_url` connects to.
    pub async fn postgres_on(admin_url: String) -> anyhow::Result<Self> {
        let name = format!(
            "herald_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_micros() % 1_000_000
        );
        let admin = sea_orm::Database::connect(admin_url.as_str()).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        admin.close().await?;
        let url = replace_database(&admin_url, &name);
        Ok(TestDb::Postgres {
            admin_url,
            name,
            url,
        })
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// Drops a PostgreSQL test database now, disconnecting its clients.
    pub async fn drop_now(admin_url: &str, name: &str) -> anyhow::Result<()> {
        let admin = sea_orm::Database::connect(admin_url).await?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
        admin.close().await?;
        Ok(())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime, which cannot be blocked on; use a thread with
            // a runtime of its own.
            let dropper = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                if let Err(error) = runtime.block_on(TestDb::drop_now(&admin_url, &name)) {
                    eprintln!("failed to drop test database {name}: {error}");
                }
            });
            let _ = dropper.join();
        }
    }
}

/// Replaces the database name (the URL path) of a PostgreSQL URL, keeping any query string.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut result = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

/// A running gateway with seeded groups and users.
///
/// Groups: operations (运营组), finance (财务组), hr. Rules: operations → finance,
/// hr → finance, finance → operations. Users: ops (operations), fin and fin2 (finance),
/// hr (hr), both (operations and hr), auditor (no groups, admin).
pub struct TestApp {
    pub base: String,
    pub backend: Backend,
    pub client: reqwest::Client,
    pub store: SeaStore,
    pub tokens: Arc<TokenAuthority>,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> anyhow::Result<Self> {
        Self::spawn_with(backend, RealtimeOptions::default()).await
    }

    /// Spawns with the given live-delivery settings, such as a small queue or a short ping.
    pub async fn spawn_with(backend: Backend, realtime: RealtimeOptions) -> anyhow::Result<Self> {
        let db = match backend {
            Backend::Sqlite => TestDb::sqlite()?,
            Backend::Postgres => TestDb::postgres()
                .await?
                .ok_or_else(|| anyhow::anyhow!("no PostgreSQL configured"))?,
        };
        Self::spawn_on(db, backend, realtime).await
    }

    /// Spawns on PostgreSQL, or returns `None` when HERALD_TEST_DATABASE_URL is not set.
    pub async fn spawn_postgres() -> Option<Self> {
        let db = TestDb::postgres()
            .await
            .expect("create a PostgreSQL test database")?;
        Some(
            Self::spawn_on(db, Backend::Postgres, RealtimeOptions::default())
                .await
                .expect("postgres test app"),
        )
    }

    async fn spawn_on(
        db: TestDb,
        backend: Backend,
        realtime: RealtimeOptions,
    ) -> anyhow::Result<Self> {
        let options = StoreOptions {
            acquire_timeout: Duration::from_secs(3),
            ..StoreOptions::default()
        };
        let store = SeaStore::connect(db.url(), &options).await?;
        store.migrate().await?;
        seed(&store).await?;

        let tokens = Arc::new(TokenAuthority::hs256(
            TEST_SECRET,
            None,
            None,
            Duration::from_secs(3600),
        )?);
        herald_gateway::metrics::handle();
        let broker = MeteredBroker::new(Arc::new(MemoryBroker::default()));
        let service = NotificationService::new(Arc::new(store.clone()), Arc::new(broker));
        let hub = Hub::start(service.clone(), realtime);
        let state = AppState {
            service,
            tokens: tokens.clone(),
            hub: hub.clone(),
            web: WebSource::Embedded,
        };
        let router = app::router(state, &HttpOptions::default());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            app::serve(listener, router, hub, async move {
                let _ = stopped.await;
            })
            .await
            .expect("test server failed");
        });

        Ok(TestApp {
            base,
            backend,
            client: reqwest::Client::new(),
            store,
            tokens,
            db,
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    /// Signs a token for a seeded user, with the user's current groups.
    pub async fn token(&self, username: &str) -> String {
        let user = self
            .store
            .find_user(&Username::parse(username).expect("valid username"))
            .await
            .expect("load user")
            .unwrap_or_else(|| panic!("no seeded user {username}"));
        self.tokens
            .issue(&user, Duration::from_secs(3600))
            .expect("sign token")
            .0
    }

    /// Signs a token for `username` with exactly `groups`, whatever the directory stores.
    pub fn token_with_groups(&self, username: &str, groups: &[&str], ttl: Duration) -> String {
        let user = UserRecord {
            username: Username::parse(username).expect("valid username"),
            password_hash: String::new(),
            groups: groups
                .iter()
                .map(|g| GroupName::parse(g).expect("valid group"))
                .collect(),
            admin: false,
            created_at: chrono::Utc::now(),
        };
        self.tokens.issue(&user, ttl).expect("sign token").0
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Returns the ws:// URL of a path.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws{}{}", self.base.trim_start_matches("http"), path)
    }

    /// Opens a socket as a seeded user, asserting that the handshake succeeds.
    pub async fn ws(&self, user: &str, path: &str) -> WsClient {
        let token = self.token(user).await;
        self.ws_with_token(&token, path)
            .await
            .unwrap_or_else(|status| panic!("handshake for {user} on {path} refused: {status}"))
    }

    /// Opens a socket with a bearer token; returns the status of a refused handshake.
    pub async fn ws_with_token(
        &self,
        token: &str,
        path: &str,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::http::StatusCode> {
        let bearer = format!("Bearer {token}");
        WsClient::connect(&self.ws_url(path), &[("authorization", &bearer)]).await
    }

    pub async fn get(&self, user: &str, path: &str) -> Reply {
        let token = self.token(user).await;
        Reply::from(
            self.client
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .expect("GET"),
        )
        .await
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> Reply {
        let token = self.token(user).await;
        Reply::from(
            self.client
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    /// Sends a notification as `user` and returns the created record, asserting 201.
    pub async fn send(&self, user: &str, content: &str, receiver: &str) -> Value {
        let reply = self
            .post(
                user,
                "/api/notifications/",
                serde_json::json!({"content": content, "receiver_group": receiver}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "send failed: {}",
            reply.body
        );
        reply.body
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A response with its body parsed as JSON (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Creates the groups, rules and users that [`TestApp`] describes.
pub async fn seed(store: &SeaStore) -> anyhow::Result<()> {
    let group = |name: &str| GroupName::parse(name).expect("valid group");
    for (name, display) in [
        ("operations", "运营组"),
        ("finance", "财务组"),
        ("hr", "人事组"),
    ] {
        store.create_group(&group(name), display).await?;
    }
    for (from, to) in [
        ("operations", "finance"),
        ("hr", "finance"),
        ("finance", "operations"),
    ] {
        store
            .add_rule(&SendRule {
                from: group(from),
                to: group(to),
            })
            .await?;
    }

    let hash = password_hash();
    let users: &[(&str, &[&str], bool)] = &[
        ("ops", &["operations"], false),
        ("fin", &["finance"], false),
        ("fin2", &["finance"], false),
        ("hr", &["hr"], false),
        ("both", &["operations", "hr"], false),
        ("auditor", &[], true),
    ];
    for (name, groups, admin) in users {
        let record = UserRecord {
            username: Username::parse(name).expect("valid user"),
            password_hash: hash.clone(),
            groups: groups.iter().map(|g| group(g)).collect::<BTreeSet<_>>(),
            admin: *admin,
            created_at: chrono::Utc::now(),
        };
        store.create_user(&record).await?;
    }
    Ok(())
}

/// One argon2 hash of [`TEST_PASSWORD`], computed once per test binary.
fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| herald_gateway::auth::hash_password(TEST_PASSWORD).expect("hash"))
        .clone()
}

/// Adds `count` finance users named fin-0, fin-1, ... for concurrency tests.
pub async fn add_finance_users(store: &SeaStore, count: usize) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("fin-{i}");
        let record = UserRecord {
            username: Username::parse(&name)?,
            password_hash: password_hash(),
            groups: BTreeSet::from([GroupName::parse("finance")?]),
            admin: false,
            created_at: chrono::Utc::now(),
        };
        store.create_user(&record).await?;
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
