//! The gateways under test: started by the bench on a throwaway database, or already running.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// Groups that benchmark traffic flows between; created on start-up when missing.
pub const SENDER_GROUP: &str = "bench-ops";
pub const RECEIVER_GROUP: &str = "bench-fin";

/// How to reach or start the gateways.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Running gateways to drive, comma-separated, such as http://127.0.0.1:8000. Without it, the
    /// bench starts its own gateways on loopback ports.
    #[arg(long, value_delimiter = ',')]
    pub url: Vec<String>,
    /// The gateways' HS256 signing secret (with --url), used to mint tokens for synthetic users.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// PID of the gateway behind the first --url, to read its memory and CPU from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The herald binary to start [default: next to this binary].
    #[arg(long)]
    pub herald: Option<PathBuf>,
    /// Database for started gateways [default: a temporary SQLite file, deleted afterwards].
    #[arg(long)]
    pub database_url: Option<String>,
    /// Broker for started gateways, such as redis://127.0.0.1:6379/0 [default: memory].
    #[arg(long)]
    pub broker: Option<String>,
    /// Number of gateways to start; more than one needs --broker and a shared database.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
}

/// Gateways ready for traffic.
pub struct Target {
    pub urls: Vec<String>,
    secret: String,
    pub pids: Vec<u32>,
    children: Vec<Child>,
    _scratch: Option<tempfile::TempDir>,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    groups: [&'a str; 1],
    iat: u64,
    exp: u64,
}

impl Target {
    pub fn prepare(args: &TargetArgs) -> anyhow::Result<Self> {
        if !args.url.is_empty() {
            let Some(secret) = args.secret.clone() else {
                bail!(
                    "--url needs the gateways' signing secret: pass --secret or set HERALD_JWT_SECRET"
                );
            };
            return Ok(Self {
                urls: args
                    .url
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .collect(),
                secret,
                pids: args.pid.into_iter().collect(),
                children: Vec::new(),
                _scratch: None,
            });
        }

        if args.instances > 1 && (args.broker.is_none() || args.database_url.is_none()) {
            bail!(
                "--instances above 1 needs --broker redis://… and a shared --database-url postgres://…"
            );
        }
        let herald = match &args.herald {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this binary has no directory")?
                .join("herald"),
        };
        let herald = herald.canonicalize().with_context(|| {
            format!(
                "{} does not exist; build it with `cargo build --release` or pass --herald PATH",
                herald.display()
            )
        })?;

        let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
        let database_url = args.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                scratch.path().join("bench.db").display()
            )
        });
        let secret = format!("bench-{}-{}", std::process::id(), unix_now());
        let secret = format!("{secret:0<48}");
        let environment = |command: &mut Command| {
            command
                .current_dir(scratch.path())
                .env("HERALD_DATABASE_URL", &database_url)
                .env("HERALD_JWT_SECRET", &secret)
                .env("HERALD_LOG", "warn")
                .env_remove("HERALD_BIND");
            if let Some(broker) = &args.broker {
                command.env("HERALD_BROKER", broker);
            }
        };

        run_cli(&herald, &environment, &["migrate"])?;
        for group in [SENDER_GROUP, RECEIVER_GROUP] {
            run_cli_allow_existing(&herald, &environment, &["group", "add", group])?;
        }
        run_cli_allow_existing(
            &herald,
            &environment,
            &["rule", "add", SENDER_GROUP, RECEIVER_GROUP],
        )?;

        let mut target = Self {
            urls: Vec::new(),
            secret: secret.clone(),
            pids: Vec::new(),
            children: Vec::new(),
            _scratch: None,
        };
        for _ in 0..args.instances {
            let mut command = Command::new(&herald);
            environment(&mut command);
            command
                .args(["serve", "--bind", "127.0.0.1:0"])
                .env("HERALD_AUTO_MIGRATE", "false")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let mut child = command.spawn().context("failed to start herald serve")?;
            let url = read_listening_url(&mut child)?;
            target.pids.push(child.id());
            target.urls.push(url);
            target.children.push(child);
        }
        target._scratch = Some(scratch);
        Ok(target)
    }

    /// Signs a token for a synthetic user in one group, valid for a day.
    pub fn token(&self, username: &str, group: &str) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: username,
            groups: [group],
            iat: now,
            exp: now + 86_400,
        };
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(self.secret.as_bytes())
                .expect("an HS256 key accepts any secret"),
        )
        .expect("HS256 signing does not fail")
    }

    /// The ws:// URL of a path on gateway `index` (round robin).
    pub fn ws_url(&self, index: usize, path: &str) -> String {
        let base = &self.urls[index % self.urls.len()];
        format!("ws{}{}", base.trim_start_matches("http"), path)
    }

    pub fn url(&self, index: usize, path: &str) -> String {
        format!("{}{}", self.urls[index % self.urls.len()], path)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn run_cli(
    herald: &PathBuf,
    environment: &dyn Fn(&mut Command),
    args: &[&str],
) -> anyhow::Result<()> {
    let mut command = Command::new(herald);
    environment(&mut command);
    let output = command
        .args(args)
        .output()
        .context("failed to run herald")?;
    if !output.status.success() {
        bail!(
            "herald {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn run_cli_allow_existing(
    herald: &PathBuf,
    environment: &dyn Fn(&mut Command),
    args: &[&str],
) -> anyhow::Result<()> {
    match run_cli(herald, environment, args) {
        Err(error) if error.to_string().contains("already") => Ok(()),
        other => other,
    }
}

/// Reads "Herald is listening on URL" from a starting gateway, then keeps its output drained.
fn read_listening_url(child: &mut Child) -> anyhow::Result<String> {
    use std::io::{BufRead, BufReader};

    let stdout = child.stdout.take().context("no standard output")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let Some(line) = lines.next() else {
            bail!("herald serve exited before it listened");
        };
        if let Some(url) = line?.strip_prefix("Herald is listening on ") {
            let url = url.trim_end_matches('/').to_owned();
            std::thread::spawn(move || for _ in lines {});
            return Ok(url);
        }
    }
    bail!("herald serve did not listen within 30 s")
}
