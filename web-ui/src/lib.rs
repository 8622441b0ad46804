//! The web UI: an axum server with embedded phone-first pages.
//!
//! Owns: HTTP, login and sessions, CSRF, TLS, pages and assets.
//!
//! Must not: hold anything the control loop waits on. It reaches the car only
//! through the `CarApi` trait the daemon implements over its bounded queues
//! and ring buffers; a slow client loses frames, it never queues them.
