//! Where a request goes and how: the normalised path, the route table, and forwarding to the
//! route's upstream. This layer never decides who the caller is; it only carries out what the
//! pipeline decided.

pub mod forward;
pub mod host;
pub mod path;
pub mod route;
pub mod upgrade;
