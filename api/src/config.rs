//! Configuration from the environment, as a container gives it. Every value is
//! checked before anything binds; a bad one is one error line naming the
//! variable, what it holds, and what it may hold.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::log::Level;

/// The variables, their defaults and meanings: `api --help` prints this.
pub const ENV_HELP: &str =
    "  PORT                      port to listen on (default 8080; 0 picks a free one)
  HOST                      IP address to bind (default 0.0.0.0, every IPv4 interface)
  PROBE_PORT                a port of its own for the kubelet's probes (GET /health, /ready), on
                            HOST too, served by its own thread with its own 32 connections, so
                            that no flood of PORT delays a probe; the other threads then run at
                            nice 10, so that it gets a CPU first (default: none; 0 picks a free one)
  LOG_LEVEL                 error, warn, info or debug (default info; debug logs every request)
  WORKERS                   threads that serve requests, 1 to 64 (default: the CPUs this process
                            may use, at most 64)
  HEADER_READ_TIMEOUT_SECS  a connection that completes no request head for this long is closed:
                            a silent or trickling client after 1x, an idle keep-alive one or one
                            that never reads its answers after 1-2x (default 10)
  MAX_CONNECTIONS           connections served at once (a silent one costs ~4 KiB, kernel
                            included); more wait in the kernel's listen queue, unaccepted
                            (default 8192; lowered to fit the open-file limit)
  MAX_ACTIVE_CONNECTIONS    of those, connections that have sent bytes and hold buffers (up to
                            ~42 KiB each, kernel included); the others wait (default 2048)
  LISTEN_BACKLOG            the kernel's queue of connections not yet accepted (default 4096;
                            the kernel caps it at net.core.somaxconn)
  SOCKET_BUFFER_BYTES       kernel send and receive buffer asked per connection (the kernel
                            doubles it); caps what a client that pipelines and never reads can
                            park in the service's memory (default 4096)
  MAX_HEAD_BYTES            largest request head (request line and headers); a larger one gets 431
                            (default 8192, the least hyper allows)
  DRAIN_DELAY_SECS          on SIGTERM/SIGINT, keep accepting and serving this long, /ready
                            answering 503 and every answer saying Connection: close, while the
                            endpoints are taken out of rotation (default 5)
  SHUTDOWN_TIMEOUT_SECS     then stop accepting: how long open connections may take to finish their
                            request; idle ones are closed at once (default 10)";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// The probe listener's port, if any.
    pub probe_port: Option<u16>,
    pub log_level: Level,
    pub shutdown_timeout: Duration,
    pub header_read_timeout: Duration,
    /// 1 runs everything on the main thread (a current-thread runtime).
    pub workers: usize,
    pub max_connections: usize,
    pub max_active_connections: usize,
    pub listen_backlog: u32,
    pub socket_buffer_bytes: u32,
    pub max_head_bytes: usize,
    pub drain_delay: Duration,
}

/// Defaults, chosen by measurement (`cargo xtask bench --abuse`, in a container
/// with rollout.yaml's 128 MiB): a silent connection costs ~4.4 KiB, an active
/// one that pipelines and never reads ~42 KiB (17 in the process, 22 in TCP
/// buffers). The worst mix the limits admit, 2048 active and 6144 silent, is
/// ~113 MiB.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 8_192;
pub const DEFAULT_MAX_ACTIVE_CONNECTIONS: u64 = 2_048;
pub const DEFAULT_LISTEN_BACKLOG: u64 = 4_096;
pub const DEFAULT_SOCKET_BUFFER_BYTES: u64 = 4_096;
pub const DEFAULT_MAX_HEAD_BYTES: u64 = 8_192;
pub const DEFAULT_DRAIN_DELAY_SECS: u64 = 5;
/// The most worker threads: more than the CPUs only costs memory (each idle
/// thread ~40 KiB of RSS: 41 MiB at 1,024); rollout.yaml gives a pod half a CPU.
pub const MAX_WORKERS: u64 = 64;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(lookup_env)
    }

    /// Reads configuration through `get` (a variable's value, if set).
    pub fn from_lookup(
        get: impl Fn(&str) -> Result<Option<String>, String>,
    ) -> Result<Config, String> {
        let default_workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS as usize);
        let port = port(&get)?;
        let probe_port = probe_port(&get, port)?;
        Ok(Config {
            host: host(&get)?,
            port,
            probe_port,
            log_level: match get("LOG_LEVEL")? {
                None => Level::Info,
                Some(value) => Level::parse(&value).ok_or_else(|| {
                    format!(
                        "LOG_LEVEL={} is not a log level: use one of {}",
                        shown(&value),
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
                1..=MAX_WORKERS,
                "a number of threads from 1 to 64 (more than the CPUs only costs memory)",
            )? as usize,
            max_connections: number(
                &get,
                "MAX_CONNECTIONS",
                DEFAULT_MAX_CONNECTIONS,
                1..=1_000_000,
                "a number of connections from 1 to 1000000",
            )? as usize,
            max_active_connections: number(
                &get,
                "MAX_ACTIVE_CONNECTIONS",
                DEFAULT_MAX_ACTIVE_CONNECTIONS,
                1..=1_000_000,
                "a number of connections from 1 to 1000000",
            )? as usize,
            listen_backlog: number(
                &get,
                "LISTEN_BACKLOG",
                DEFAULT_LISTEN_BACKLOG,
                1..=65_535,
                "a number of connections from 1 to 65535",
            )? as u32,
            socket_buffer_bytes: number(
                &get,
                "SOCKET_BUFFER_BYTES",
                DEFAULT_SOCKET_BUFFER_BYTES,
                4_096..=16_777_216,
                "a number of bytes from 4096 to 16777216",
            )? as u32,
            max_head_bytes: number(
                &get,
                "MAX_HEAD_BYTES",
                DEFAULT_MAX_HEAD_BYTES,
                8_192..=1_048_576,
                "a number of bytes from 8192 to 1048576",
            )? as usize,
            drain_delay: Duration::from_secs(number(
                &get,
                "DRAIN_DELAY_SECS",
                DEFAULT_DRAIN_DELAY_SECS,
                0..=3600,
                "a whole number of seconds from 0 to 3600",
            )?),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Where the probe listener binds, if there is one.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.host, self.probe_port?))
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
        probe_port: None,
        log_level: Level::Info,
        shutdown_timeout: Duration::ZERO,
        header_read_timeout: Duration::ZERO,
        workers: 1,
        max_connections: 1,
        max_active_connections: 1,
        listen_backlog: 1,
        socket_buffer_bytes: 0,
        max_head_bytes: 0,
        drain_delay: Duration::ZERO,
    };
    Ok(config.health_url_addr())
}

fn lookup_env(name: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => Err(format!(
            "{name}={} is not valid UTF-8: set it to plain text",
            shown(&value.to_string_lossy())
        )),
    }
}

fn host(get: &impl Fn(&str) -> Result<Option<String>, String>) -> Result<IpAddr, String> {
    match get("HOST")? {
        None => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(value) => value.parse().map_err(|_| {
            format!(
                "HOST={} is not an IP address: use one such as 0.0.0.0 (every IPv4 \
                 interface), :: (every interface) or 127.0.0.1 (this machine only)",
                shown(&value)
            )
        }),
    }
}

fn port(get: &impl Fn(&str) -> Result<Option<String>, String>) -> Result<u16, String> {
    match get("PORT")? {
        None => Ok(8080),
        Some(value) => value.parse().map_err(|_| {
            format!(
                "PORT={} is not a port number: use a whole number from 1 to 65535 (0 picks a free one)",
                shown(&value)
            )
        }),
    }
}

fn probe_port(
    get: &impl Fn(&str) -> Result<Option<String>, String>,
    port: u16,
) -> Result<Option<u16>, String> {
    let Some(value) = get("PROBE_PORT")? else {
        return Ok(None);
    };
    let probe: u16 = value.parse().map_err(|_| {
        format!(
            "PROBE_PORT={} is not a port number: use a whole number from 1 to 65535 (0 picks a \
             free one), or leave it unset for no probe port",
            shown(&value)
        )
    })?;
    if probe != 0 && probe == port {
        return Err(format!(
            "PROBE_PORT={} is PORT too: give the probes another port, such as {}",
            shown(&value),
            port.wrapping_add(1).max(1)
        ));
    }
    Ok(Some(probe))
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
    let value_shown = shown(&value);
    match value.parse::<u64>() {
        Ok(n) if allowed.contains(&n) => Ok(n),
        Ok(_) => Err(format!("{name}={value_shown} is out of range: use {what}")),
        // Digits only, but too many for a u64: out of range all the same.
        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{name}={value_shown} is out of range: use {what}"))
        }
        Err(_) => Err(format!("{name}={value_shown} is not a number: use {what}")),
    }
}

/// The most of a bad value an error shows: enough to recognise it, not so much
/// that one line fills a screen (or a log store).
const SHOWN_CHARS: usize = 64;

/// `value` quoted as Rust's `{:?}` does, cut to its first [`SHOWN_CHARS`]
/// characters with the length said when it is longer.
fn shown(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= SHOWN_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(SHOWN_CHARS).collect();
    format!("{head:?}... ({} bytes in all)", value.len())
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
        assert_eq!(c.max_connections, 8_192);
        assert_eq!(c.max_active_connections, 2_048);
        assert_eq!(c.listen_backlog, 4_096);
        assert_eq!(c.socket_buffer_bytes, 4_096);
        assert_eq!(c.max_head_bytes, 8_192);
        assert_eq!(c.drain_delay, Duration::from_secs(5));
        assert!(c.workers <= 64);
        assert_eq!(c.probe_port, None);
        assert_eq!(c.probe_addr(), None);
    }

    #[test]
    fn a_probe_port_binds_on_host() {
        let c = config(&[("HOST", "127.0.0.1"), ("PROBE_PORT", "8081")]).unwrap();
        assert_eq!(c.probe_addr(), Some("127.0.0.1:8081".parse().unwrap()));
        let both_free = config(&[("PORT", "0"), ("PROBE_PORT", "0")]).unwrap();
        assert_eq!(both_free.probe_port, Some(0));
        assert_eq!(config(&[("WORKERS", "64")]).unwrap().workers, 64);
    }

    #[test]
    fn every_limit_is_read() {
        let c = config(&[
            ("MAX_CONNECTIONS", "100"),
            ("MAX_ACTIVE_CONNECTIONS", "10"),
            ("LISTEN_BACKLOG", "64"),
            ("SOCKET_BUFFER_BYTES", "8192"),
            ("MAX_HEAD_BYTES", "16384"),
            ("DRAIN_DELAY_SECS", "0"),
        ])
        .unwrap();
        assert_eq!(
            (
                c.max_connections,
                c.max_active_connections,
                c.listen_backlog
            ),
            (100, 10, 64)
        );
        assert_eq!((c.socket_buffer_bytes, c.max_head_bytes), (8192, 16384));
        assert_eq!(c.drain_delay, Duration::ZERO);
    }

    #[test]
    fn text_where_a_number_belongs_is_not_a_number() {
        for (var, value) in [("WORKERS", "abc"), ("MAX_CONNECTIONS", "-1"), ("PORT", "x")] {
            let err = config(&[(var, value)]).unwrap_err();
            assert!(err.contains("not a") && !err.contains("range"), "{err}");
        }
        for (var, value) in [("WORKERS", "0"), ("WORKERS", "99999999999999999999999")] {
            let err = config(&[(var, value)]).unwrap_err();
            assert!(err.contains("out of range"), "{var}={value}: {err}");
        }
    }

    #[test]
    fn a_long_bad_value_is_cut_in_the_error() {
        let long = "x".repeat(100_000);
        for var in ["LOG_LEVEL", "WORKERS", "HOST", "PORT"] {
            let err = config(&[(var, long.as_str())]).unwrap_err();
            assert!(err.len() < 300, "{var}: {} bytes", err.len());
            assert!(err.contains("100000 bytes in all"), "{err}");
        }
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
            ("WORKERS", "0", "from 1 to 64"),
            ("WORKERS", "abc", "from 1 to 64"),
            ("WORKERS", "1024", "from 1 to 64"),
            ("PROBE_PORT", "http", "from 1 to 65535"),
            ("PROBE_PORT", "8080", "another port, such as 8081"),
            ("MAX_CONNECTIONS", "0", "from 1 to 1000000"),
            ("MAX_ACTIVE_CONNECTIONS", "many", "from 1 to 1000000"),
            ("LISTEN_BACKLOG", "70000", "from 1 to 65535"),
            ("SOCKET_BUFFER_BYTES", "100", "from 4096"),
            ("MAX_HEAD_BYTES", "4096", "from 8192"),
            ("DRAIN_DELAY_SECS", "5s", "from 0 to 3600"),
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
