//! Node integration tests: real nodes on 127.0.0.1:0, driven through the real client.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod dashboard;
mod flywheel;
mod helpers;
mod hub;
mod infer;
mod limits;
mod llm_payments;
mod llm_verification;
mod network;
mod openapi;
mod openai;
mod payments;
mod postgres;
mod prometheus;
mod python_sdk;
mod receipts;
mod verification;
