//! Node integration tests: real nodes on 127.0.0.1:0, driven through the real client.

mod helpers;
mod hub;
mod infer;
mod payments;
mod postgres;
