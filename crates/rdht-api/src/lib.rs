//! rdht-api: the local API between the daemon and its clients (the `rdht` CLI and the
//! cargo shim): versioned, length-prefixed postcard frames over a Unix socket.
//!
//! Owns: request/response types and the client. Does not own: what the daemon does
//! with a request.
//!
//! This crate is filled by the daemon issue; until then it only names its place.
