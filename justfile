# Convenience recipes on top of cargo; every recipe is a plain cargo command underneath.

# PostgreSQL and Redis on this machine, for the tests that use them.
export HERALD_TEST_DATABASE_URL := env_var_or_default("HERALD_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
export REDIS_URL := env_var_or_default("REDIS_URL", "redis://127.0.0.1:6379/0")
export BENCH_DATABASE_URL := env_var_or_default("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/herald_bench")

default:
    @just --list

# Start the gateway with demo groups and users on ./herald.db
run:
    cargo run --release -- serve --demo

# Run every test (SQLite always; PostgreSQL and Redis from the variables above)
test:
    cargo test --workspace

# Check formatting and lints
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Apply pending migrations to HERALD_DATABASE_URL (default sqlite://herald.db?mode=rwc)
migrate:
    cargo run --release -- migrate

# Run the five benchmark scenarios of docs/benchmarks.md on release builds (several minutes).
# Scenarios 4 and 5 use BENCH_DATABASE_URL, a PostgreSQL database of their own, and REDIS_URL.
bench:
    cargo build --release -p herald-gateway -p herald-bench
    ./target/release/herald-bench fanout --sockets 10000 --notifications 60 --rate 1
    ./target/release/herald-bench fanout --sockets 1000 --notifications 2000 --rate 0
    ./target/release/herald-bench connect --sockets 19000
    -createdb -h 127.0.0.1 -U postgres herald_bench
    ./target/release/herald-bench --database-url "$BENCH_DATABASE_URL" rest --clients 32 --duration-secs 30
    ./target/release/herald-bench --instances 2 --broker "$REDIS_URL" --database-url "$BENCH_DATABASE_URL" fanout --sockets 10000 --notifications 60 --rate 1
