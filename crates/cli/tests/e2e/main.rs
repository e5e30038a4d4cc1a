//! End-to-end tests of the real `lemming` binary on temp orgs: one test binary,
//! one module per area. The fixture is in `fixture.rs`.

mod agent_trouble;
mod audit;
mod basics;
mod browser;
mod config;
mod config_checks;
mod crash;
mod credits;
mod daemon;
mod docs;
mod failures;
mod fake_http;
mod fixture;
mod fsck;
mod kill9;
mod live;
mod odd_entries;
mod output_cli;
mod peers;
mod people;
mod providers;
mod record;
mod replies;
mod routing;
mod samples;
mod sandbox;
mod state_numbers;
mod status_columns;
mod tools;
mod turn;
mod turn_events;
mod views;
mod zero_counts;
