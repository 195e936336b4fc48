//! Examples for Lumen: `cargo run --release -p lumen-examples --example NAME`.
