//! The `herald` binary: administration commands, settings errors and `serve --demo`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use herald_gateway::auth::TokenAuthority;

const SECRET: &str = "cli-test-secret-of-at-least-32-bytes!!";

/// A `herald` command in `dir`, with no inherited HERALD_* settings.
fn herald(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.current_dir(dir);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("HERALD_")) {
        command.env_remove(key);
    }
    command.env(
        "HERALD_DATABASE_URL",
        format!("sqlite://{}?mode=rwc", dir.join("cli.db").display()),
    );
    command.env("HERALD_JWT_SECRET", SECRET);
    command.env("HERALD_LOG", "warn");
    command
}

fn run(dir: &Path, args: &[&str]) -> Output {
    herald(dir).args(args).output().expect("run herald")
}

fn run_with_stdin(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = herald(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for herald")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

#[test]
fn administration_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();

    assert_ok(&run(path, &["migrate"]));
    assert_ok(&run(
        path,
        &["group", "add", "operations", "--display-name", "运营组"],
    ));
    assert_ok(&run(
        path,
        &["group", "add", "finance", "--display-name", "财务组"],
    ));
    let duplicate = run(path, &["group", "add", "finance"]);
    assert_eq!(duplicate.status.code(), Some(2));
    assert!(
        stderr(&duplicate).contains("already exists"),
        "{}",
        stderr(&duplicate)
    );

    let groups = run(path, &["group", "list"]);
    assert_ok(&groups);
    assert!(stdout(&groups).contains("财务组"), "{}", stdout(&groups));

    assert_ok(&run(path, &["rule", "add", "operations", "finance"]));
    let rules = run(path, &["rule", "list"]);
    assert!(
        stdout(&rules)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["operations", "finance"]),
        "{}",
        stdout(&rules)
    );

    assert_ok(&run_with_stdin(
        path,
        &[
            "user",
            "add",
            "ops",
            "--group",
            "operations",
            "--password-stdin",
        ],
        "a long password\n",
    ));
    let short = run_with_stdin(
        path,
        &[
            "user",
            "add",
            "x",
            "--group",
            "operations",
            "--password-stdin",
        ],
        "short\n",
    );
    assert_eq!(short.status.code(), Some(2));
    let unknown_group = run_with_stdin(
        path,
        &["user", "add", "y", "--group", "legal", "--password-stdin"],
        "a long password\n",
    );
    assert!(
        stderr(&unknown_group).contains("group legal does not exist"),
        "{}",
        stderr(&unknown_group)
    );

    assert_ok(&run(
        path,
        &[
            "user",
            "set-groups",
            "ops",
            "--group",
            "operations",
            "--group",
            "finance",
        ],
    ));
    let users = run(path, &["user", "list"]);
    assert!(
        stdout(&users).contains("finance,operations"),
        "{}",
        stdout(&users)
    );

    let token = run(path, &["token", "ops", "--ttl", "10m"]);
    assert_ok(&token);
    let authority =
        TokenAuthority::hs256(SECRET.as_bytes(), None, None, Duration::from_secs(60)).unwrap();
    let verified = authority
        .verify(stdout(&token).trim())
        .expect("the printed token verifies");
    assert_eq!(verified.caller.username.as_str(), "ops");
    assert_eq!(verified.caller.groups.len(), 2);

    assert_ok(&run_with_stdin(
        path,
        &["user", "passwd", "ops", "--password-stdin"],
        "another long password\n",
    ));
    assert_ok(&run(path, &["rule", "remove", "operations", "finance"]));
    assert_ok(&run(path, &["user", "remove", "ops"]));
    let gone = run(path, &["token", "ops"]);
    assert_eq!(gone.status.code(), Some(2));
}

#[test]
fn bad_settings_stop_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("HERALD_TOKEN_TTL", "soon", "HERALD_TOKEN_TTL"),
        ("HERALD_JWT_SECRET", "short", "HERALD_JWT_SECRET"),
        ("HERALD_BIND", "nowhere", "HERALD_BIND"),
        (
            "HERALD_DATABASE_URL",
            "mysql://db/herald",
            "HERALD_DATABASE_URL",
        ),
    ];
    for (key, value, named) in cases {
        let output = herald(dir.path())
            .env(key, value)
            .args(["serve"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        let message = stderr(&output);
        assert_eq!(message.trim_end().lines().count(), 1, "one line: {message}");
        assert!(message.contains(named), "{key}: {message}");
    }

    std::fs::write(dir.path().join("herald.toml"), "token_ttl = \"later\"\n").unwrap();
    let output = run(dir.path(), &["group", "list"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("token_ttl in herald.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn serve_requires_a_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald(dir.path())
        .env_remove("HERALD_JWT_SECRET")
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("HERALD_JWT_SECRET is not set"),
        "{}",
        stderr(&output)
    );
}

/// Reads stdout lines until the "listening" line, returning them all.
fn read_until_listening(child: &mut Child) -> Vec<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = receiver.recv_timeout(Duration::from_millis(200)) {
            let done = line.starts_with("Herald is listening on");
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
    panic!("herald did not start: {lines:?}");
}

#[test]
fn demo_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = herald(dir.path())
        .env_remove("HERALD_JWT_SECRET")
        .args(["serve", "--demo", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = read_until_listening(&mut child);

    let password = |user: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("user {user} ")))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("no password for {user} in {lines:?}"))
            .to_owned()
    };
    let url = lines
        .last()
        .unwrap()
        .trim_start_matches("Herald is listening on ")
        .trim_end_matches('/')
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{url}/api/auth/token"))
            .json(&serde_json::json!({"username": "ops", "password": password("ops")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
    });

    // SIGTERM: finish in flight, exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "herald did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
