//! The integration tests, one binary (one link, one process): each module is one part of the
//! pipeline seen from outside, `support` the helpers they share. `scripts/test` starts moto and
//! names the emulator and the bootstraps; without them the AWS and emulator tests skip, unless
//! `REQUIRE_MOTO` is set.

mod support;

mod aws;
mod emulator;
mod faults;
mod hostile;
mod lambda_handlers;
mod loadgen;
mod logs;
mod pipeline;
mod properties;
mod reconcile;
mod runbooks;
mod serve;
mod storm;
