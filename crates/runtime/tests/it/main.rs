//! verinet-runtime against real ONNX models: the committed digits MLP, the PyPI-shipped MiniLM
//! and Magika models (from `VERINET_TEST_MODELS`), and the hand-made graphs in `tests/data`.
//! `suite` holds the checks every backend passes; `tract` and `onnxruntime` run it.

mod cache;
mod digits;
mod fuzz;
mod helpers;
mod invalid;
mod limits;
mod onnxruntime;
mod suite;
mod tract;
