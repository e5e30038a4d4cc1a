//! End-to-end tests of the real `lemming` binary on temp orgs: one test binary,
//! one module per area. The fixture is in `fixture.rs`.

mod basics;
mod config;
mod crash;
mod credits;
mod failures;
mod fixture;
mod routing;
mod samples;
