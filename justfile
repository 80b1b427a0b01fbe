# Convenience recipes on top of cargo; every recipe is a plain cargo command underneath.

# PostgreSQL and Redis on this machine, for the tests that use them.
export HERALD_TEST_DATABASE_URL := env_var_or_default("HERALD_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
export REDIS_URL := env_var_or_default("REDIS_URL", "redis://127.0.0.1:6379/0")

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
