//! Operating the gateway: logging setup (and, with the operations issue, metrics, the admin
//! listener and reload). Nothing here changes a request's outcome.

pub mod telemetry;
