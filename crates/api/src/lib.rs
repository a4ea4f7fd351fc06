//! The HTTP API of a verinet node: an axum [`Router`] over traits, no wiring.
//!
//! - [`router`]: every stable path of DESIGN.md that exists so far; [`openapi`]: its OpenAPI
//!   3.1 document, generated from the same annotated handlers (`/openapi.json`, `/docs`).
//! - [`AppState`], [`ApiConfig`]: what handlers share.
//! - [`ApiError`]: the one error type; its `IntoResponse` decides every status.
//! - `infer`: the request pipeline (resolve, validate, price, pay, execute, settle, answer),
//!   readable top to bottom in one file; `pay`: its payment step (x402 or session -> escrow).
//! - `openai`: chat and text completions on OpenAI's API (JSON or server-sent events);
//!   `embeddings`: `/v1/embeddings`. Both tokenize on the gateway and route like `infer`.
//! - `money`: accounts, faucet, apps, spending sessions, payment records, x402 facilitator.
//! - `receipts`: a receipt's status and its Merkle inclusion proof.
//! - `verification`: the execution step by mode (none, sampled, quorum), disputes and slashing.
//! - `nodes`: the workers and validators with stake, reputation and liveness; remote ones join
//!   and stay live by signed heartbeat, and stake through `POST /v1/stake`.
//! - `flywheel`: the per-layer report and bottleneck (`/v1/flywheel`, Prometheus `/metrics`).
//! - [`Traffic`]: every served request counted for a periodic log summary (and an optional
//!   access log) instead of a log line per call.
//!
//! [`Router`]: axum::Router

mod dto;
mod embeddings;
mod error;
mod flywheel;
mod health;
mod infer;
mod limits;
mod models;
mod nodes;
mod openai;
mod openapi;
mod money;
mod pay;
mod receipts;
mod verification;
mod routes;
mod state;
mod prom;
mod traffic;

pub use error::{AnsweredBefore, ApiError, PaymentRefusal};
pub use openapi::openapi;
pub use routes::router;
pub use state::{ApiConfig, AppState, NetworkConfig, PaymentsConfig, VerificationConfig};
pub use traffic::{Traffic, TrafficSummary};
