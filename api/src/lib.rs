//! The `api` service: the router and its handlers, testable without a socket.

/// The version compiled in: `API_VERSION` at build time, `dev` otherwise.
pub const VERSION: &str = match option_env!("API_VERSION") {
    Some(v) => v,
    None => "dev",
};
