//! The `herald` command line: `serve`, `migrate`, and the administration of groups, users,
//! send rules and tokens.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use herald_core::store::{DirectoryStore, Store, UserRecord};
use herald_core::{Broker, GroupName, MemoryBroker, NotificationService, SendRule, Username};
use herald_redis::{RedisBroker, RedisOptions};
use herald_store::{SeaStore, StoreOptions};

use crate::app::{self, AppState, HttpOptions};
use crate::auth::{self, TokenAuthority};
use crate::config::{BrokerSetting, JwtKey, RawSettings, Settings, parse_duration, redact_url};
use crate::metrics::MeteredBroker;
use crate::realtime::{Hub, RealtimeOptions};
use crate::routes::web::WebSource;

/// Minimum password length accepted by `user add` and `user passwd`.
const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, Parser)]
#[command(name = "herald", version, about = "Real-time group notifications")]
pub struct Cli {
    /// Configuration file [default: ./herald.toml when it exists]
    #[arg(long, global = true, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Database URL, such as sqlite://herald.db?mode=rwc or postgres://herald@127.0.0.1/herald
    /// [env: HERALD_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the gateway
    Serve(ServeArgs),
    /// Apply pending database migrations
    Migrate,
    /// Manage groups
    #[command(subcommand)]
    Group(GroupCommand),
    /// Manage users
    #[command(subcommand)]
    User(UserCommand),
    /// Manage send rules: which group may send to which
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Print a signed access token for a user, for scripts and API clients
    Token {
        username: String,
        /// Token lifetime, such as 30m, 1h or 7d [default: HERALD_TOKEN_TTL]
        #[arg(long)]
        ttl: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [env: HERALD_BIND] [default: 127.0.0.1:8000]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// On an empty database, create demo groups, users and a send rule; without a configured
    /// signing secret, generate one for this run
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group
    Add {
        /// Lower-case slug: a-z, 0-9, '-' and '_', 1 to 64 characters
        name: String,
        /// Name shown to people, such as 财务组 [default: the name]
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List groups
    List,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input
    Add {
        username: String,
        /// Group to join; repeat for several
        #[arg(long = "group", required = true)]
        groups: Vec<String>,
        /// Allow reading every notification, for audits
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List users
    List,
    /// Replace a user's groups
    SetGroups {
        username: String,
        #[arg(long = "group", required = true)]
        groups: Vec<String>,
    },
    /// Change a user's password; the new one is read from standard input
    Passwd {
        username: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Remove a user (their notifications stay, for the audit trail)
    Remove { username: String },
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Let members of FROM send to TO
    Add { from: String, to: String },
    /// Stop members of FROM sending to TO
    Remove { from: String, to: String },
    /// List send rules
    List,
}

/// A failure that ends the command: the message is printed as one line, with an exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Self {
        Exit {
            code: 1,
            message: format!("{error:#}"),
        }
    }
}

fn usage(message: impl Into<String>) -> Exit {
    Exit {
        code: 2,
        message: message.into(),
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Exit> {
    let mut raw = RawSettings::load(cli.config.as_deref()).map_err(|e| usage(e.to_string()))?;
    raw.set_flag("database_url", "--database-url", cli.database_url.clone());
    if let Command::Serve(args) = &cli.command {
        raw.set_flag("bind", "--bind", args.bind.clone());
    }
    let settings = Settings::parse(&raw).map_err(|e| usage(e.to_string()))?;

    match cli.command {
        Command::Serve(args) => serve(settings, args.demo).await,
        Command::Migrate => {
            let store = open_store(&settings).await?;
            let applied = store
                .migrate()
                .await
                .context("failed to apply migrations")?;
            println!(
                "applied {applied} migration(s) to {}",
                redact_url(&settings.database_url)
            );
            Ok(())
        }
        Command::Group(command) => group_command(&prepared_store(&settings).await?, command).await,
        Command::User(command) => user_command(&prepared_store(&settings).await?, command).await,
        Command::Rule(command) => rule_command(&prepared_store(&settings).await?, command).await,
        Command::Token { username, ttl } => {
            let ttl = match ttl {
                Some(raw) => parse_duration(&raw).ok_or_else(|| {
                    usage(format!(
                        "invalid --ttl {raw:?}: use a duration such as 30m or 1h"
                    ))
                })?,
                None => settings.token_ttl,
            };
            let JwtKey::Secret(secret) = &settings.jwt_key else {
                return Err(usage(
                    "herald token signs with HERALD_JWT_SECRET, which is not set; with a public-key algorithm, tokens come from the identity provider",
                ));
            };
            let authority = TokenAuthority::hs256(
                secret,
                settings.jwt_issuer.clone(),
                settings.jwt_audience.clone(),
                ttl,
            )?;
            let store = prepared_store(&settings).await?;
            let user = store
                .find_user(&parse_username(&username)?)
                .await
                .context("failed to load the user")?
                .ok_or_else(|| {
                    usage(format!(
                        "user {username} does not exist; create it with herald user add"
                    ))
                })?;
            let (token, _) = authority.issue(&user, ttl)?;
            println!("{token}");
            Ok(())
        }
    }
}

async fn open_store(settings: &Settings) -> anyhow::Result<SeaStore> {
    let options = StoreOptions {
        max_connections: settings.database_max_connections,
        ..StoreOptions::default()
    };
    SeaStore::connect(&settings.database_url, &options)
        .await
        .with_context(|| {
            format!(
                "failed to open the database {}",
                redact_url(&settings.database_url)
            )
        })
}

/// Opens the store and, unless disabled, applies pending migrations.
async fn prepared_store(settings: &Settings) -> anyhow::Result<SeaStore> {
    let store = open_store(settings).await?;
    if settings.auto_migrate {
        let applied = store
            .migrate()
            .await
            .context("failed to apply migrations")?;
        if applied > 0 {
            tracing::info!(applied, "applied database migrations");
        }
    }
    Ok(store)
}

async fn serve(settings: Settings, demo: bool) -> Result<(), Exit> {
    crate::logging::init(&settings.log, settings.log_format).map_err(|e| usage(e.to_string()))?;

    let authority = match &settings.jwt_key {
        JwtKey::Secret(secret) => TokenAuthority::hs256(
            secret,
            settings.jwt_issuer.clone(),
            settings.jwt_audience.clone(),
            settings.token_ttl,
        )?,
        JwtKey::PublicKey { algorithm, pem, .. } => TokenAuthority::public_key(
            *algorithm,
            pem,
            settings.jwt_issuer.clone(),
            settings.jwt_audience.clone(),
            settings.token_ttl,
        )?,
        JwtKey::Missing if demo => {
            eprintln!(
                "No HERALD_JWT_SECRET is set: using a random signing secret for this run; tokens stop working when it restarts."
            );
            let secret = auth::random_token(48);
            TokenAuthority::hs256(
                secret.as_bytes(),
                settings.jwt_issuer.clone(),
                settings.jwt_audience.clone(),
                settings.token_ttl,
            )?
        }
        JwtKey::Missing => {
            return Err(usage(
                "HERALD_JWT_SECRET is not set: set it to at least 32 random bytes (openssl rand -base64 48), or set HERALD_JWT_ALGORITHM and HERALD_JWT_PUBLIC_KEY_FILE to verify an identity provider's tokens, or run herald serve --demo",
            ));
        }
    };

    // Bind first: a taken port should stop start-up before migrations or demo data run.
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|error| {
            Exit::from(anyhow::anyhow!(
                "failed to listen on {} (--bind or HERALD_BIND): {error}; choose a free address, such as --bind 127.0.0.1:8001",
                settings.bind
            ))
        })?;

    let store = prepared_store(&settings).await?;
    tracing::info!(database = %redact_url(&settings.database_url), backend = store.backend_name(), "database ready");
    if demo {
        seed_demo(&store).await?;
    }
    auth::prepare_password_checks();

    let store: Arc<dyn Store> = Arc::new(store);
    let broker: Arc<dyn Broker> = match &settings.broker {
        BrokerSetting::Memory => Arc::new(MemoryBroker::default()),
        BrokerSetting::Redis { url } => {
            let options = RedisOptions {
                url: url.clone(),
                prefix: settings.broker_prefix.clone(),
            };
            let broker = RedisBroker::start(options).map_err(|error| {
                usage(format!("{error} (HERALD_BROKER); use redis://HOST:PORT/DB"))
            })?;
            tracing::info!(broker = %redact_url(url), prefix = %settings.broker_prefix, "using the Redis broker");
            Arc::new(broker)
        }
    };
    crate::metrics::handle();
    let broker: Arc<dyn Broker> = Arc::new(MeteredBroker::new(broker));
    let service = NotificationService::new(store, broker);
    let hub = Hub::start(
        service.clone(),
        RealtimeOptions {
            queue_frames: settings.ws_queue_frames as usize,
            queue_bytes: settings.ws_queue_bytes as usize,
            ping_interval: settings.ws_ping_interval,
            reconcile_interval: settings.reconcile_interval,
            allowed_origins: settings.cors_origins.clone(),
            ..RealtimeOptions::default()
        },
    );
    let state = AppState {
        service,
        tokens: Arc::new(authority),
        hub: hub.clone(),
        web: match &settings.web_dir {
            Some(directory) => {
                tracing::info!(directory = %directory.display(), "serving the web client from a directory");
                WebSource::Directory(directory.clone())
            }
            None => WebSource::Embedded,
        },
    };
    let router = app::router(
        state,
        &HttpOptions {
            cors_origins: settings.cors_origins.clone(),
            serve_metrics: settings.metrics_bind.is_none(),
        },
    );
    if let Some(address) = settings.metrics_bind {
        serve_metrics(address).await?;
    }

    let address = listener
        .local_addr()
        .context("failed to read the listening address")?;
    tracing::info!(%address, "herald listening");
    println!("Herald is listening on http://{address}/");

    app::serve(listener, router, hub, shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("herald stopped");
    Ok(())
}

/// Serves `/metrics` on a listener of its own, for a port that only the monitoring system reaches.
async fn serve_metrics(address: std::net::SocketAddr) -> Result<(), Exit> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("failed to listen on {address} (HERALD_METRICS_BIND)"))?;
    let router = axum::Router::new().route("/metrics", axum::routing::get(crate::metrics::render));
    tracing::info!(%address, "metrics listening");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "metrics listener failed");
        }
    });
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}

/// Creates the demo groups, users and rule on an empty database and prints the passwords once.
async fn seed_demo(store: &SeaStore) -> anyhow::Result<()> {
    if !store
        .is_empty()
        .await
        .context("failed to inspect the database")?
    {
        println!("Demo: the database already has groups or users; leaving them as they are.");
        return Ok(());
    }

    let operations = GroupName::parse("operations").expect("valid");
    let finance = GroupName::parse("finance").expect("valid");
    store.create_group(&operations, "运营组").await?;
    store.create_group(&finance, "财务组").await?;
    store
        .add_rule(&SendRule {
            from: operations.clone(),
            to: finance.clone(),
        })
        .await?;

    println!(
        "Demo data created: groups operations (运营组) and finance (财务组); operations may send to finance."
    );
    for (name, group) in [("ops", &operations), ("fin", &finance)] {
        let password = auth::random_token(16);
        let user = UserRecord {
            username: Username::parse(name).expect("valid"),
            password_hash: auth::hash_password(&password)?,
            groups: BTreeSet::from([group.clone()]),
            admin: false,
            created_at: herald_core::notification::now_millis(),
        };
        store.create_user(&user).await?;
        println!("  user {name:<4} group {group:<11} password {password}");
    }
    println!("These passwords are shown only once.");
    Ok(())
}

async fn group_command(store: &SeaStore, command: GroupCommand) -> Result<(), Exit> {
    match command {
        GroupCommand::Add { name, display_name } => {
            let group = parse_group(&name)?;
            let display_name = display_name.unwrap_or_else(|| name.clone());
            if display_name.trim().is_empty() {
                return Err(usage("invalid --display-name: must not be blank"));
            }
            if !store
                .create_group(&group, &display_name)
                .await
                .context("failed to create the group")?
            {
                return Err(usage(format!("group {group} already exists")));
            }
            println!("created group {group} ({display_name})");
        }
        GroupCommand::List => {
            let groups = store.list_groups().await.context("failed to list groups")?;
            println!("{:<24} {:>8}  DISPLAY NAME", "NAME", "SEQ");
            for g in groups {
                println!("{:<24} {:>8}  {}", g.name, g.seq, g.display_name);
            }
        }
    }
    Ok(())
}

async fn user_command(store: &SeaStore, command: UserCommand) -> Result<(), Exit> {
    match command {
        UserCommand::Add {
            username,
            groups,
            admin,
            ..
        } => {
            let username = parse_username(&username)?;
            let groups = existing_groups(store, &groups).await?;
            let password = read_password()?;
            let record = UserRecord {
                username: username.clone(),
                password_hash: auth::hash_password(&password)?,
                groups,
                admin,
                created_at: herald_core::notification::now_millis(),
            };
            if !store
                .create_user(&record)
                .await
                .context("failed to create the user")?
            {
                return Err(usage(format!(
                    "user {username} already exists; change it with herald user set-groups or passwd"
                )));
            }
            println!("created user {username}");
        }
        UserCommand::List => {
            let users = store.list_users().await.context("failed to list users")?;
            println!("{:<24} {:<6} GROUPS", "USERNAME", "ADMIN");
            for u in users {
                let groups: Vec<&str> = u.groups.iter().map(GroupName::as_str).collect();
                println!(
                    "{:<24} {:<6} {}",
                    u.username,
                    if u.admin { "yes" } else { "no" },
                    groups.join(",")
                );
            }
        }
        UserCommand::SetGroups { username, groups } => {
            let username = parse_username(&username)?;
            let groups = existing_groups(store, &groups).await?;
            if !store
                .set_user_groups(&username, &groups)
                .await
                .context("failed to change the groups")?
            {
                return Err(usage(format!("user {username} does not exist")));
            }
            println!(
                "user {username} is now in {}; this applies from the user's next token",
                join(&groups)
            );
        }
        UserCommand::Passwd { username, .. } => {
            let username = parse_username(&username)?;
            let password = read_password()?;
            let hash = auth::hash_password(&password)?;
            if !store
                .set_password_hash(&username, &hash)
                .await
                .context("failed to change the password")?
            {
                return Err(usage(format!("user {username} does not exist")));
            }
            println!("changed the password of {username}");
        }
        UserCommand::Remove { username } => {
            let username = parse_username(&username)?;
            if !store
                .remove_user(&username)
                .await
                .context("failed to remove the user")?
            {
                return Err(usage(format!("user {username} does not exist")));
            }
            println!("removed user {username}; tokens already issued stay valid until they expire");
        }
    }
    Ok(())
}

async fn rule_command(store: &SeaStore, command: RuleCommand) -> Result<(), Exit> {
    match command {
        RuleCommand::Add { from, to } => {
            let rule = SendRule {
                from: parse_group(&from)?,
                to: parse_group(&to)?,
            };
            existing_groups(store, &[from, to]).await?;
            if !store
                .add_rule(&rule)
                .await
                .context("failed to add the rule")?
            {
                println!("rule {} -> {} already exists", rule.from, rule.to);
            } else {
                println!("members of {} may now send to {}", rule.from, rule.to);
            }
        }
        RuleCommand::Remove { from, to } => {
            let rule = SendRule {
                from: parse_group(&from)?,
                to: parse_group(&to)?,
            };
            if !store
                .remove_rule(&rule)
                .await
                .context("failed to remove the rule")?
            {
                return Err(usage(format!(
                    "rule {} -> {} does not exist",
                    rule.from, rule.to
                )));
            }
            println!("members of {} may no longer send to {}", rule.from, rule.to);
        }
        RuleCommand::List => {
            let rules = store.list_rules().await.context("failed to list rules")?;
            println!("{:<24} TO", "FROM");
            for r in rules {
                println!("{:<24} {}", r.from, r.to);
            }
        }
    }
    Ok(())
}

fn parse_group(raw: &str) -> Result<GroupName, Exit> {
    GroupName::parse(raw).map_err(|e| usage(format!("invalid group name {raw:?}: {e}")))
}

fn parse_username(raw: &str) -> Result<Username, Exit> {
    Username::parse(raw).map_err(|e| usage(format!("invalid username {raw:?}: {e}")))
}

async fn existing_groups(store: &SeaStore, names: &[String]) -> Result<BTreeSet<GroupName>, Exit> {
    let mut groups = BTreeSet::new();
    for raw in names {
        let group = parse_group(raw)?;
        if store
            .find_group(&group)
            .await
            .context("failed to load a group")?
            .is_none()
        {
            return Err(usage(format!(
                "group {group} does not exist; create it with herald group add {group}"
            )));
        }
        groups.insert(group);
    }
    Ok(groups)
}

fn read_password() -> Result<String, Exit> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("failed to read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(usage(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    Ok(password)
}

fn join(groups: &BTreeSet<GroupName>) -> String {
    groups
        .iter()
        .map(GroupName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
