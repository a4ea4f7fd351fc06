//! Integration tests of verinet-payments, one binary: payloads made by other runtimes.

mod fuzz;
mod upto_python;
