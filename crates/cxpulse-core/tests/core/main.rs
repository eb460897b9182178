//! The core's integration tests in one test binary (`cargo test -p cxpulse-core --test core`):
//! the engine against a naive model (`model`), two simulated days (`long_run`) and the NPS-drop
//! detector (`drop_evidence`).

mod drop_evidence;
mod long_run;
mod model;
