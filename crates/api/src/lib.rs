//! The HTTP API of a verinet node: an axum [`Router`] over traits, no wiring.
//!
//! - [`router`]: every stable path of DESIGN.md that exists so far.
//! - [`AppState`], [`ApiConfig`]: what handlers share.
//! - [`ApiError`]: the one error type; its `IntoResponse` decides every status.
//! - `infer`: the request pipeline (resolve, validate, price, pay, execute, account, answer),
//!   readable top to bottom in one file.
//!
//! [`Router`]: axum::Router

mod dto;
mod error;
mod health;
mod infer;
mod models;
mod routes;
mod state;

pub use error::ApiError;
pub use routes::router;
pub use state::{ApiConfig, AppState};
