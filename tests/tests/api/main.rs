//! The integration tests: one binary, the real app over HTTP, every test on
//! SQLite and (with TEST_DATABASE_URL) on PostgreSQL.

mod batching;
mod concurrency;
mod dashboard;
mod durability;
mod fixtures;
mod graphql;
mod health;
mod observability;
mod operations;
mod process;
mod refusals;
mod signatures;
mod slow_clients;
mod subscriptions;
mod v2;
