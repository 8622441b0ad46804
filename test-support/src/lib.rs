//! Helpers the workspace's tests and benches share, in one place so they
//! cannot drift apart: a counting global allocator (the "0 heap
//! allocations per frame" checks and the benches' figures) and synthetic
//! camera frames (a track as the car's camera sees it).
//!
//! Dev-only: it depends on none of our crates (so any of them can use it
//! without a dependency cycle) and the tidy test checks no crate has it as
//! a normal dependency.

pub mod alloc;
pub mod frames;
