//! The simulator: DeepRacer track files, a kinematic car, a camera renderer,
//! reward `params` and episode rules, and an expert driver.
//!
//! Owns: everything about the simulated world. Deterministic: the same seed
//! and actions give bit-identical observations and params.
//!
//! Must not: touch hardware, threads, clocks or the file system beyond
//! loading track files; depend on inference or the daemon.
