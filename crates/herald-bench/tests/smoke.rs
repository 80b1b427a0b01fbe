//! A few seconds of each scenario against a gateway that the bench starts, so that the load
//! generator keeps working as the gateway changes. The full runs are `just bench`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The herald binary of this build, next to the bench's own binary.
fn herald() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_herald-bench"));
    let herald = bench.with_file_name(format!("herald{}", std::env::consts::EXE_SUFFIX));
    if !herald.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "herald-gateway", "--bin", "herald"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin herald failed");
    }
    herald
}

/// Runs one scenario with `--json` and returns its report.
fn run(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .arg("--herald")
        .arg(herald())
        .arg("--json")
        .args(args)
        .output()
        .expect("run herald-bench");
    assert!(
        output.status.success(),
        "herald-bench {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

#[test]
fn fanout_delivers_everything_once() {
    let report = run(&[
        "fanout",
        "--sockets",
        "20",
        "--notifications",
        "10",
        "--rate",
        "20",
    ]);

    assert_eq!(report["scenario"], "fanout");
    assert_eq!(report["deliveries"], 200);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicated"], 0);
    assert_eq!(report["out_of_order"], 0);
    assert!(report["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(report["gateway_cpu_us_per_delivery"].is_number());
}

#[test]
fn connect_reports_memory_per_socket() {
    let report = run(&["connect", "--sockets", "50"]);

    assert_eq!(report["connected"], 50);
    assert_eq!(report["failures"], 0);
    assert!(report["gateway_kib_per_socket"].is_number(), "{report}");
}

#[test]
fn rest_creates_and_confirms() {
    let report = run(&["rest", "--clients", "2", "--duration-secs", "2"]);

    assert_eq!(report["errors"], 0);
    assert!(report["creations_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(
        report["create_latency"]["count"],
        report["confirm_latency"]["count"]
    );
}
