//! Integration tests of verinet-payments, one binary: payloads made by other runtimes.

mod upto_python;
