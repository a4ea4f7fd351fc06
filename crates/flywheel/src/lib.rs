//! The flywheel: how demand travels through compute -> models -> applications -> users ->
//! payments -> incentives -> verification -> trust -> usage.
//!
//! - [`Event`], [`RequestEvent`]: what every step emits.
//! - [`EventLog`]: events buffered off the request path, written in batches.
//! - [`Tallies`]: request events rolled up per bucket and key; what is stored and what the
//!   report reads.
//! - [`Report`], [`Inventory`]: per-layer metrics over a window, the trend against the window
//!   before, every layer's shortfall score, and the [`Bottleneck`]: the layer that loses the
//!   most demand, named by a documented, deterministic method.

mod event;
mod log;
mod report;
mod score;
mod tally;

pub use event::{Event, RequestEvent};
pub use log::{EventLog, Retention};
pub use report::{
    Applications, Bottleneck, Compute, ExecutorInfo, Incentives, Inventory, LAYERS, LayerScore, Models, Payments, Point, Report,
    Tokens, Trend, Trust, Usage, Users, Verification, Window,
};
pub use tally::{Hist, Tallies, Tally, TallyKey};
