//! Decisions without proxying: the one function that decides about a request head
//! ([`decision::decide`]), used by the proxy pipeline, by the forward-auth endpoint that other
//! proxies (nginx, Traefik, Envoy) ask, and by `authgate explain`. Nothing here forwards a
//! request; each caller only presents the decision differently.

pub mod decision;
pub mod explain;
pub mod forward_auth;
