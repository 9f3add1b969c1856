//! Who is calling and may they pass: the credential, the algorithm table, signing keys and their
//! JWKS cache, token verification, the denylist, the route's policy and the identity headers.
//! Everything that decides validity comes from config, never from the token. This layer never
//! forwards a request and never writes a response.

pub mod algorithms;
pub mod credential;
pub mod denylist;
pub mod denylist_file;
pub mod denylist_live;
pub mod denylist_redis;
pub mod identity;
pub mod idp_http;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod policy;
pub mod revocations;
