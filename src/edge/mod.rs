//! Bytes in and out: listening sockets, TLS, HTTP/1.1 and HTTP/2 connections, tunnels and body
//! timeouts. This layer hands each request to a [`server::RequestHandler`] and never looks
//! inside it: it knows nothing of routes, credentials or identities.

pub mod body;
pub mod headers;
pub mod listener;
pub mod server;
pub mod tls;
pub mod tunnel;
