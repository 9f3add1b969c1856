//! Operating the gateway: metrics, logging, the admin listener (health, readiness, metrics) and
//! hot reload. Nothing here changes a request's outcome; `metrics` and `telemetry` are leaves
//! that every layer may use, `admin` and `reload` sit at the top beside `app`.

pub mod admin;
pub mod log_writer;
pub mod metrics;
pub mod reload;
pub mod request_id;
pub mod revoke_api;
pub mod revoke_client;
pub mod telemetry;
