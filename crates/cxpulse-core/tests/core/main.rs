//! The core's integration tests in one test binary (`cargo test -p cxpulse-core --test core`):
//! the engine against a naive model (`model`) and two simulated days (`long_run`).

mod long_run;
mod model;
