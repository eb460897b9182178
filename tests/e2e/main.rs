//! Every integration test of the `cxpulse` binary in one test binary (`cargo test --test e2e`):
//! one link against librdkafka instead of one per file, and one fixture (`fixture`) shared by
//! every module. A test is named by its module: `cargo test --test e2e alerting::demo_alerting`.
//!
//! The tests of all modules run concurrently (libtest's threads), so a test owns what it touches:
//! ports from `fixture::free_port`, directories from `fixture::TempDir`, a mock cluster or
//! prefixed topics and groups of its own (`fixture::Scenario`), and environment variables only
//! on the child processes it starts, never on this process.

mod fixture;

mod alerting;
mod cli;
mod counts;
mod customers;
mod deploy;
mod early_warning;
mod event_schema;
mod faults;
mod feed;
mod gateway;
mod gateway_limits;
mod http_limits;
mod http_security;
mod lifecycle;
mod module_graph;
mod page_browser;
mod poison;
mod rebalance;
mod scores_api;
mod secrets;
mod topic_config;
