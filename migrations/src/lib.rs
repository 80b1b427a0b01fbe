//! Herald's database schema as sea-orm migrations.
//!
//! The same migrations run on SQLite and PostgreSQL; `herald migrate` applies them, and so does
//! `herald serve` unless `HERALD_AUTO_MIGRATE=false`. Migrations are append-only: change the
//! schema by adding a new one, never by editing one that has shipped.

pub use sea_orm_migration::prelude::*;

mod m20261204_000001_initial;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261204_000001_initial::Migration)]
    }
}
