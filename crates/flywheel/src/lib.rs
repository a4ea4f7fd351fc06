//! The flywheel: how demand travels through compute -> models -> applications -> users ->
//! payments -> incentives -> verification -> trust -> usage.
//!
//! - [`Event`], [`RequestEvent`]: what every step emits.
//! - [`EventLog`]: events buffered off the request path, written in batches.
//! - [`Report`], [`Inventory`]: per-layer metrics over a window, and the [`Bottleneck`]:
//!   the layer now holding demand back, named by a documented, deterministic method.

mod event;
mod log;
mod report;

pub use event::{Event, RequestEvent};
pub use log::EventLog;
pub use report::{Bottleneck, ExecutorInfo, Inventory, Report, Tokens};
