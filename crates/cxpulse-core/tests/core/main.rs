//! The core's integration tests in one test binary (`cargo test -p cxpulse-core --test core`):
//! the engine against a naive model (`model`), two simulated days (`long_run`), the NPS-drop
//! detector (`drop_evidence`) and the customer book against its own naive model (`customers`).

mod customers;
mod drop_evidence;
mod long_run;
mod model;
