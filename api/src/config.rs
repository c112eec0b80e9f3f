//! Configuration from the environment, as a container gives it. Every value is
//! checked before anything binds; a bad one is one error line naming the
//! variable, what it holds, and what it may hold.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::log::Level;

/// The variables, their defaults and meanings: `api --help` prints this.
pub const ENV_HELP: &str = "  PORT                      port to listen on (default 8080; 0 picks a free one)
  HOST                      IP address to bind (default 0.0.0.0, every IPv4 interface)
  LOG_LEVEL                 error, warn, info or debug (default info; debug logs every request)
  SHUTDOWN_TIMEOUT_SECS     on SIGTERM/SIGINT, how long in-flight requests may take to finish (default 10)
  HEADER_READ_TIMEOUT_SECS  a connection that completes no request head for this long is closed:
                            a silent client after 1x, an idle keep-alive one after 1-2x (default 10)
  WORKERS                   threads that serve requests (default: the CPUs this process may use)";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub log_level: Level,
    pub shutdown_timeout: Duration,
    pub header_read_timeout: Duration,
    /// 1 runs everything on the main thread (a current-thread runtime).
    pub workers: usize,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(lookup_env)
    }

    /// Reads configuration through `get` (a variable's value, if set).
    pub fn from_lookup(
        get: impl Fn(&str) -> Result<Option<String>, String>,
    ) -> Result<Config, String> {
        let default_workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Config {
            host: host(&get)?,
            port: port(&get)?,
            log_level: match get("LOG_LEVEL")? {
                None => Level::Info,
                Some(value) => Level::parse(&value).ok_or_else(|| {
                    format!(
                        "LOG_LEVEL={value:?} is not a log level: use one of {}",
                        Level::NAMES
                    )
                })?,
            },
            shutdown_timeout: Duration::from_secs(number(
                &get,
                "SHUTDOWN_TIMEOUT_SECS",
                10,
                0..=3600,
                "a whole number of seconds from 0 to 3600",
            )?),
            header_read_timeout: Duration::from_secs(number(
                &get,
                "HEADER_READ_TIMEOUT_SECS",
                10,
                1..=3600,
                "a whole number of seconds from 1 to 3600",
            )?),
            workers: number(
                &get,
                "WORKERS",
                default_workers as u64,
                1..=1024,
                "a number of threads from 1 to 1024",
            )? as usize,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Where `api healthcheck` asks: the bound address, with a wildcard host
    /// (0.0.0.0, ::) replaced by the loopback address of its family.
    pub fn health_url_addr(&self) -> SocketAddr {
        let host = match self.host {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(host, self.port)
    }
}

/// Only what `api healthcheck` needs: the host and a port that is not 0.
pub fn healthcheck_addr() -> Result<SocketAddr, String> {
    healthcheck_addr_from(lookup_env)
}

pub fn healthcheck_addr_from(
    get: impl Fn(&str) -> Result<Option<String>, String>,
) -> Result<SocketAddr, String> {
    let port = port(&get)?;
    if port == 0 {
        return Err(
            "PORT=0 names no service to check: set PORT to the port the service listens on".into(),
        );
    }
    let config = Config {
        host: host(&get)?,
        port,
        log_level: Level::Info,
        shutdown_timeout: Duration::ZERO,
        header_read_timeout: Duration::ZERO,
        workers: 1,
    };
    Ok(config.health_url_addr())
}

fn lookup_env(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => Err(format!(
            "{name}={value:?} is not valid UTF-8: set it to plain text"
        )),
    }
}

fn host(get: &impl Fn(&str) -> Result<Option<String>, String>) -> Result<IpAddr, String> {
    match get("HOST")? {
        None => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(value) => value.parse().map_err(|_| {
            format!(
                "HOST={value:?} is not an IP address: use one such as 0.0.0.0 (every IPv4 \
                 interface), :: (every interface) or 127.0.0.1 (this machine only)"
            )
        }),
    }
}

fn port(get: &impl Fn(&str) -> Result<Option<String>, String>) -> Result<u16, String> {
    match get("PORT")? {
        None => Ok(8080),
        Some(value) => value.parse().map_err(|_| {
            format!("PORT={value:?} is not a port number: use a whole number from 1 to 65535 (0 picks a free one)")
        }),
    }
}

fn number(
    get: &impl Fn(&str) -> Result<Option<String>, String>,
    name: &str,
    default: u64,
    allowed: std::ops::RangeInclusive<u64>,
    what: &str,
) -> Result<u64, String> {
    let Some(value) = get(name)? else {
        return Ok(default);
    };
    match value.parse::<u64>() {
        Ok(n) if allowed.contains(&n) => Ok(n),
        _ => Err(format!("{name}={value:?} is out of range: use {what}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_lookup(|name| {
            Ok(vars
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string()))
        })
    }

    #[test]
    fn defaults_suit_a_container() {
        let c = config(&[]).unwrap();
        assert_eq!(c.addr(), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.log_level, Level::Info);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert!(c.workers >= 1);
    }

    #[test]
    fn every_variable_is_read() {
        let c = config(&[
            ("PORT", "3000"),
            ("HOST", "::1"),
            ("LOG_LEVEL", "Debug"),
            ("SHUTDOWN_TIMEOUT_SECS", "0"),
            ("HEADER_READ_TIMEOUT_SECS", "2"),
            ("WORKERS", "3"),
        ])
        .unwrap();
        assert_eq!(c.addr(), "[::1]:3000".parse().unwrap());
        assert_eq!(c.log_level, Level::Debug);
        assert_eq!(c.shutdown_timeout, Duration::ZERO);
        assert_eq!(c.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.workers, 3);
    }

    #[test]
    fn a_bad_value_names_the_variable_its_value_and_the_fix() {
        for (var, value, fix) in [
            ("PORT", "abc", "from 1 to 65535"),
            ("PORT", "70000", "from 1 to 65535"),
            ("PORT", "-1", "from 1 to 65535"),
            ("PORT", "", "from 1 to 65535"),
            ("HOST", "localhost", "0.0.0.0"),
            ("LOG_LEVEL", "verbose", "error, warn, info, debug"),
            ("SHUTDOWN_TIMEOUT_SECS", "1.5", "from 0 to 3600"),
            ("SHUTDOWN_TIMEOUT_SECS", "99999", "from 0 to 3600"),
            ("HEADER_READ_TIMEOUT_SECS", "0", "from 1 to 3600"),
            ("WORKERS", "0", "from 1 to 1024"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert!(
                err.starts_with(&format!("{var}={value:?} ")),
                "{var}={value}: {err}"
            );
            assert!(err.contains(fix), "{var}={value}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn healthcheck_asks_loopback_when_bound_to_every_interface() {
        let addr = |vars: &[(&str, &str)]| {
            healthcheck_addr_from(|name| {
                Ok(vars
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string()))
            })
        };
        assert_eq!(addr(&[]).unwrap(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            addr(&[("HOST", "::"), ("PORT", "81")]).unwrap(),
            "[::1]:81".parse().unwrap()
        );
        assert_eq!(
            addr(&[("HOST", "127.0.0.2")]).unwrap(),
            "127.0.0.2:8080".parse().unwrap()
        );
        assert!(addr(&[("PORT", "0")]).unwrap_err().contains("PORT=0"));
    }

    #[test]
    fn healthcheck_ignores_variables_it_does_not_use() {
        let addr =
            healthcheck_addr_from(|name| Ok((name == "LOG_LEVEL").then(|| "nonsense".to_string())));
        assert_eq!(addr.unwrap(), "127.0.0.1:8080".parse().unwrap());
    }
}
