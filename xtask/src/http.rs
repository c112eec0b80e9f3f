//! Just enough HTTP/1.1 to ask a service a question: one GET, `Connection:
//! close`, read until the answer is complete. A full client would cost more
//! compile time than `sanity` and `bench` are worth.
//!
//! Whatever the peer does, a request ends: one deadline covers resolving,
//! connecting, sending and reading together (a peer trickling a byte a second
//! does not extend it), and at most [`MAX_RESPONSE`] bytes are read (a peer
//! flooding does not grow memory). Every wait is cut in slices of at most
//! [`SLICE`], so Ctrl-C ends a request within one (`interrupt::Interrupted`).
//! URLs are checked strictly, so nothing but a plain `http://HOST[:PORT]`
//! (and a plain path) ever reaches the wire.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::interrupt;

/// The longest a request waits without looking for Ctrl-C.
const SLICE: Duration = Duration::from_millis(100);

/// The most a response (status line, headers and body) may hold.
pub const MAX_RESPONSE: usize = 1024 * 1024;
/// [`MAX_RESPONSE`] as the error message names it.
const MAX_RESPONSE_TEXT: &str = "1 MiB";

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Where a host is: a DNS name, or an IP address (IPv6 written in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// A checked `http://HOST[:PORT]` with no userinfo, path, query or fragment:
/// what `--url` takes. It shows as it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    text: String,
    host: Host,
    port: u16,
    /// `HOST[:PORT]` as given, for the `Host` header.
    authority: String,
}

impl BaseUrl {
    /// `http://HOST[:PORT]`, without a trailing `/`, for appending a path.
    pub fn base(&self) -> String {
        format!("http://{}", self.authority)
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for BaseUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<BaseUrl, String> {
        parse_base_url(text)
    }
}

const BASE_URL_FORM: &str = "give http://HOST[:PORT], HOST a DNS name, an IPv4 address or an [IPv6] address, \
     such as http://127.0.0.1:8080";

/// Parses a `--url`: `http://HOST[:PORT]` with at most a trailing `/`.
/// The error names what is wrong and what is allowed (for clap's value_parser).
/// The value is shown in the error with any `user:password@` masked.
pub fn parse_base_url(text: &str) -> Result<BaseUrl, String> {
    let shown = masked(text);
    let (url, path) = split_url(text).map_err(|why| format!("invalid URL {shown:?}: {why}"))?;
    if !(path.is_empty() || path == "/") {
        return Err(format!(
            "invalid URL {shown:?}: a base URL has no path, query or fragment; {BASE_URL_FORM}"
        ));
    }
    Ok(url)
}

/// `text` with whatever precedes an `@` in the authority (a password, say) replaced by `***`.
fn masked(text: &str) -> String {
    let scheme_end = text.find("://").map_or(0, |i| i + 3);
    let authority_end = text[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| scheme_end + i);
    match text[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..scheme_end], &text[scheme_end + at..]),
        None => text.to_owned(),
    }
}

/// Splits `http://HOST[:PORT][/PATH]` into a checked base and the path as given
/// (empty, or starting with `/`). Any character that is not visible ASCII is
/// refused, so nothing can add a line to a request.
fn split_url(text: &str) -> Result<(BaseUrl, &str), String> {
    if let Some((i, c)) = text.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        let what = match c {
            '\r' => "a carriage return (CR)".to_owned(),
            '\n' => "a line feed (LF)".to_owned(),
            ' ' => "a space".to_owned(),
            c if c.is_control() => format!("the control character {c:?}"),
            c if !c.is_ascii() => {
                format!("the non-ASCII character {c:?} (write a name in its xn-- form)")
            }
            c => format!("{c:?}"),
        };
        return Err(format!(
            "it holds {what} at byte {i}, which no URL may hold; {BASE_URL_FORM}"
        ));
    }
    let Some(rest) = text
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &text[7..])
    else {
        return Err(format!("only http:// is supported; {BASE_URL_FORM}"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if !(path.is_empty() || path.starts_with('/')) {
        return Err(format!(
            "a base URL has no query or fragment; {BASE_URL_FORM}"
        ));
    }
    if authority.contains('@') {
        return Err(format!(
            "user:password@ (userinfo) is not allowed in the URL; {BASE_URL_FORM}"
        ));
    }
    if authority.is_empty() {
        return Err(format!("it has no host; {BASE_URL_FORM}"));
    }
    let (host_text, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(format!("an [IPv6] address lacks its ']'; {BASE_URL_FORM}"));
        };
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                format!("only :PORT may follow an [IPv6] address; {BASE_URL_FORM}")
            })?),
        };
        (inside, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(
                    "an IPv6 address goes in brackets, such as http://[::1]:8080".to_owned(),
                );
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port_text {
        None => 80,
        Some(port) => parse_port(port)?,
    };
    let host = if authority.starts_with('[') {
        let ip: Ipv6Addr = host_text.parse().map_err(|_| {
            format!(
                "{host_text:?} is not an IPv6 address (zones are not supported); {BASE_URL_FORM}"
            )
        })?;
        Host::Ip(IpAddr::V6(ip))
    } else if !host_text.is_empty() && host_text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = host_text.parse().map_err(|_| {
            format!("{host_text:?} is not an IPv4 address (four numbers 0-255 without leading zeros); {BASE_URL_FORM}")
        })?;
        Host::Ip(IpAddr::V4(ip))
    } else {
        check_dns_name(host_text)?;
        Host::Name(host_text.to_owned())
    };
    let url = BaseUrl {
        text: text.to_owned(),
        host,
        port,
        authority: authority.to_owned(),
    };
    Ok((url, path))
}

fn parse_port(port: &str) -> Result<u16, String> {
    let valid = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(n) if valid && n != 0 => Ok(n),
        _ => Err(format!(
            "port {port:?} is not a number from 1 to 65535; {BASE_URL_FORM}"
        )),
    }
}

/// RFC 1123 host names: dot-separated labels of 1 to 63 letters, digits and
/// '-', not starting or ending with '-', 253 characters at most.
fn check_dns_name(name: &str) -> Result<(), String> {
    let name_without_root = name.strip_suffix('.').unwrap_or(name);
    let valid = !name_without_root.is_empty()
        && name_without_root.len() <= 253
        && name_without_root.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        return Err(format!(
            "{name:?} is not a host name (labels of letters, digits and '-', joined by '.'); {BASE_URL_FORM}"
        ));
    }
    Ok(())
}

/// `GET url` where url is `http://HOST[:PORT][/PATH]`, all of it (resolving,
/// connecting, sending, reading) within `timeout`, reading at most [`MAX_RESPONSE`].
pub fn get(url: &str, timeout: Duration) -> Result<Response> {
    get_limited(url, timeout, MAX_RESPONSE)
}

fn get_limited(url: &str, timeout: Duration, limit: usize) -> Result<Response> {
    let (base, path) =
        split_url(url).map_err(|why| anyhow::anyhow!("invalid URL {:?}: {why}", masked(url)))?;
    let path = if path.is_empty() { "/" } else { path };
    if path.contains('#') {
        bail!("invalid URL {url:?}: a request has no #fragment");
    }
    let deadline = Instant::now()
        .checked_add(timeout)
        .with_context(|| format!("a timeout of {timeout:?} is too long"))?;
    // A step cut short by the deadline says so, whichever step it was.
    let in_time = |err: anyhow::Error| match err.downcast_ref::<std::io::Error>() {
        Some(io) if is_timeout(io) => {
            anyhow::anyhow!("no complete answer within {:.1}s", timeout.as_secs_f64())
        }
        _ => err,
    };

    let result = request(url, &base, path, deadline, limit, in_time);
    // However a step was cut short by a signal, the error says so.
    interrupt::check()?;
    result
}

fn request(
    url: &str,
    base: &BaseUrl,
    path: &str,
    deadline: Instant,
    limit: usize,
    in_time: impl Fn(anyhow::Error) -> anyhow::Error,
) -> Result<Response> {
    let addrs = resolve(base, deadline).map_err(&in_time)?;
    let mut stream = connect(&addrs, deadline).map_err(&in_time)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xtask\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        base.authority
    );
    remaining(deadline)
        .and_then(|left| stream.set_write_timeout(Some(left)))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|err| in_time(anyhow::Error::new(err)))
        .with_context(|| format!("send request to {url}"))?;

    let raw = read_bounded(&mut stream, deadline, limit).map_err(|err| match err {
        ReadError::TooLarge => anyhow::anyhow!(
            "the response from {url} is larger than {} (xtask reads at most that much)",
            limit_text(limit)
        ),
        ReadError::Io(err) => {
            in_time(anyhow::Error::new(err)).context(format!("read response from {url}"))
        }
    })?;
    parse(&raw).with_context(|| format!("response from {url}"))
}

/// A socket timeout (`WouldBlock` on Unix, `TimedOut` elsewhere) or our deadline.
fn is_timeout(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn limit_text(limit: usize) -> String {
    if limit == MAX_RESPONSE {
        MAX_RESPONSE_TEXT.to_owned()
    } else {
        format!("{limit} bytes")
    }
}

/// What is left until `deadline` but at most [`SLICE`]; an error once it
/// passed, or when a signal came.
fn slice(deadline: Instant) -> std::io::Result<Duration> {
    if interrupt::interrupted() {
        return Err(std::io::ErrorKind::Interrupted.into());
    }
    Ok(remaining(deadline)?.min(SLICE))
}

/// What is left until `deadline`, or an error once it passed.
fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(deadline_passed());
    }
    Ok(left)
}

fn deadline_passed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline passed")
}

/// The addresses of the host; a name is looked up on a thread, so a slow
/// resolver cannot outlast the deadline (the thread ends with the resolver).
fn resolve(base: &BaseUrl, deadline: Instant) -> Result<Vec<SocketAddr>> {
    let name = match &base.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, base.port)]),
        Host::Name(name) => name.clone(),
    };
    let port = base.port;
    let (send, receive) = mpsc::channel();
    let lookup = name.clone();
    std::thread::spawn(move || {
        let _ = send.send(
            (lookup.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>),
        );
    });
    let addrs = loop {
        match receive.recv_timeout(slice(deadline)?) {
            Ok(found) => break found.with_context(|| format!("resolve {name}"))?,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(deadline_passed().into()),
        }
    };
    if addrs.is_empty() {
        bail!("{name} has no address");
    }
    Ok(addrs)
}

/// Connects to the first address that answers, within the deadline.
fn connect(addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match connect_one(*addr, deadline) {
            Ok(stream) => return Ok(stream),
            Err(err) if is_timeout(&err) => return Err(err.into()),
            Err(err) => last = Some(anyhow::Error::new(err).context(format!("connect to {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no address to connect to")))
}

/// A connect on a thread, waited for in slices; an abandoned one ends at the deadline.
fn connect_one(addr: SocketAddr, deadline: Instant) -> std::io::Result<TcpStream> {
    let left = remaining(deadline)?;
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(TcpStream::connect_timeout(&addr, left));
    });
    loop {
        match receive.recv_timeout(slice(deadline)?) {
            Ok(connected) => return connected,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(deadline_passed()),
        }
    }
}

enum ReadError {
    TooLarge,
    Io(std::io::Error),
}

/// Reads until the peer closes or the answer is complete, whichever comes
/// first, never past `deadline` and never more than `limit` bytes.
fn read_bounded(
    stream: &mut TcpStream,
    deadline: Instant,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = slice(deadline).map_err(ReadError::Io)?;
        stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => n,
            // The deadline or a signal is for `slice` to say.
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted || is_timeout(&err) => {
                continue;
            }
            Err(err) => return Err(ReadError::Io(err)),
        };
        if raw.len() + n > limit {
            return Err(ReadError::TooLarge);
        }
        raw.extend_from_slice(&buf[..n]);
        if is_complete(&raw) {
            return Ok(raw);
        }
    }
}

/// Whether `raw` holds a whole response, so a peer that keeps the
/// connection open after answering does not make us wait for the deadline.
fn is_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match (name.trim(), value.trim()) {
            ("content-length", n) => return n.parse::<usize>().is_ok_and(|n| body.len() >= n),
            ("transfer-encoding", te) if te.ends_with("chunked") => {
                return body.ends_with(b"0\r\n\r\n")
                    && dechunk(&String::from_utf8_lossy(body)).is_ok();
            }
            _ => {}
        }
    }
    false
}

fn parse(raw: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!(
            "connection closed before a complete HTTP header ({} bytes)",
            raw.len()
        );
    };
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let chunked = head.lines().any(|line| {
        line.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(Response { status, body })
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n").context("truncated chunked body")?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).context("truncated chunk")?;
        out.push_str(chunk);
        body = rest
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .context("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread::JoinHandle;

    #[test]
    fn parses_status_and_body() {
        let r =
            parse(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{\"a\":1}"));
    }

    #[test]
    fn parses_a_chunked_body() {
        let r = parse(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (500, "abcde"));
    }

    #[test]
    fn a_truncated_header_is_an_error() {
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn refuses_other_schemes() {
        let err = get("https://example.com/", Duration::from_millis(10)).unwrap_err();
        assert!(err.to_string().contains("only http://"), "{err}");
    }

    #[test]
    fn base_urls_that_are_plain_http_host_port_pass() {
        for (ok, host, port) in [
            (
                "http://127.0.0.1:8080",
                Host::Ip("127.0.0.1".parse().unwrap()),
                8080,
            ),
            (
                "http://127.0.0.1:8080/",
                Host::Ip("127.0.0.1".parse().unwrap()),
                8080,
            ),
            ("http://localhost", Host::Name("localhost".into()), 80),
            (
                "HTTP://api-preview.staging.svc:1",
                Host::Name("api-preview.staging.svc".into()),
                1,
            ),
            (
                "http://[::1]:65535",
                Host::Ip("::1".parse().unwrap()),
                65535,
            ),
            ("http://[::1]", Host::Ip("::1".parse().unwrap()), 80),
            ("http://a.b.", Host::Name("a.b.".into()), 80),
        ] {
            let url = parse_base_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!((&url.host, url.port), (&host, port), "{ok}");
            assert_eq!(url.to_string(), ok);
            assert!(!url.base().ends_with('/'), "{ok}");
        }
        assert_eq!(
            parse_base_url("http://[::1]:8080/").unwrap().base(),
            "http://[::1]:8080"
        );
    }

    #[test]
    fn anything_but_http_host_port_is_refused_naming_the_problem() {
        for (bad, why) in [
            ("http://127.0.0.1:8080\r\nX-Injected: 1", "carriage return"),
            ("http://127.0.0.1:8080\nX: 1", "line feed"),
            ("http://exa mple.com", "a space"),
            ("http://example.com\t", "control character"),
            ("http://\u{7f}x", "control character"),
            ("http://bücher.example", "non-ASCII"),
            ("https://example.com", "only http://"),
            ("127.0.0.1:8080", "only http://"),
            ("ftp://x", "only http://"),
            ("http://", "no host"),
            ("http:///health", "no host"),
            ("http://:8080", "not a host name"),
            ("http://user:pw@example.com", "userinfo"),
            ("http://@example.com", "userinfo"),
            ("http://example.com/health", "no path"),
            ("http://example.com//", "no path"),
            ("http://example.com?x=1", "no query"),
            ("http://example.com#top", "no query or fragment"),
            ("http://example.com/?x", "no path"),
            ("http://example.com:0", "1 to 65535"),
            ("http://example.com:65536", "1 to 65535"),
            ("http://example.com:", "1 to 65535"),
            ("http://example.com:+80", "1 to 65535"),
            ("http://example.com:080080", "1 to 65535"),
            ("http://example.com:http", "1 to 65535"),
            ("http://-x.example", "not a host name"),
            ("http://x-.example", "not a host name"),
            ("http://a..b", "not a host name"),
            ("http://a_b", "not a host name"),
            ("http://%41", "not a host name"),
            (&format!("http://{}.com", "x".repeat(64)), "not a host name"),
            ("http://256.0.0.1", "not an IPv4 address"),
            ("http://127.0.0.01", "not an IPv4 address"),
            ("http://127.1", "not an IPv4 address"),
            ("http://8080", "not an IPv4 address"),
            ("http://::1", "in brackets"),
            ("http://[::1", "lacks its ']'"),
            ("http://[::1]x", "only :PORT"),
            ("http://[fe80::1%25eth0]", "not an IPv6 address"),
            ("http://[127.0.0.1]", "not an IPv6 address"),
        ] {
            let err = parse_base_url(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(
                err.contains("http://HOST[:PORT]") || err.contains("[::1]:8080"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn a_password_in_a_refused_url_is_not_shown() {
        for (bad, shown) in [
            ("http://user:s3cret@example.com", "http://***@example.com"),
            ("http://:s3cret@@example.com/x", "http://***@example.com/x"),
            ("https://user:s3cret@example.com", "https://***@example.com"),
        ] {
            let err = parse_base_url(bad).expect_err(bad);
            assert!(!err.contains("s3cret"), "{err}");
            assert!(err.contains(shown), "{err}");
            let err = format!("{:#}", get(bad, Duration::from_secs(1)).expect_err(bad));
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn get_refuses_to_send_what_would_change_the_request() {
        for bad in [
            "http://127.0.0.1:9/health\r\nX-Injected: 1",
            "http://127.0.0.1:9/he alth",
            "http://127.0.0.1:9/health#x",
            "http://127.0.0.1:9\n/health",
        ] {
            let err = get(bad, Duration::from_secs(1)).expect_err(bad).to_string();
            assert!(err.starts_with("invalid URL"), "{bad:?}: {err}");
        }
    }

    /// A loopback server that runs `serve` on its first connection; joined
    /// within a generous bound that only proves it ended.
    struct Peer {
        url: String,
        thread: JoinHandle<usize>,
    }

    impl Peer {
        fn start(serve: impl FnOnce(TcpStream) -> usize + Send + 'static) -> Peer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/health", listener.local_addr().unwrap());
            let thread = std::thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                serve(stream)
            });
            Peer { url, thread }
        }

        /// What the peer wrote before it stopped.
        fn join(self) -> usize {
            let bound = Instant::now() + Duration::from_secs(60);
            while !self.thread.is_finished() {
                assert!(
                    Instant::now() < bound,
                    "the peer did not stop: the client kept it going"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            self.thread.join().unwrap()
        }
    }

    fn read_request(stream: &mut TcpStream) -> String {
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            request.push(byte[0]);
        }
        String::from_utf8_lossy(&request).into_owned()
    }

    #[test]
    fn a_peer_trickling_bytes_does_not_extend_the_deadline() {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let peer = Peer::start(move |mut stream| {
            read_request(&mut stream);
            let mut sent = 0;
            // A byte every 50ms until the client goes away: each read
            // returns well within any per-read timeout.
            let trickle = b"HTTP/1.1 200 OK\r\nX-Slow: "
                .iter()
                .chain(std::iter::repeat(&b'a'));
            // Bounded: 300 bytes (15s) if the client never gave up.
            for byte in trickle.take(300) {
                if stopped.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            sent
        });
        let err = get(&peer.url, Duration::from_millis(700)).unwrap_err();
        stop.store(true, Ordering::Relaxed);
        let err = format!("{err:#}");
        assert!(err.contains("no complete answer"), "{err}");
        assert!(err.contains("within 0.7s"), "{err}");
        let sent = peer.join();
        assert!(
            sent > 3,
            "the peer sent only {sent} bytes: it did not trickle"
        );
    }

    #[test]
    fn a_peer_flooding_is_cut_off_at_the_limit() {
        let written = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&written);
        let peer = Peer::start(move |mut stream| {
            read_request(&mut stream);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            let chunk = [b'x'; 64 * 1024];
            // Bounded: at most 256 MiB, far past the limit, if the client never stopped.
            for _ in 0..4096 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                count.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            count.load(Ordering::Relaxed)
        });
        let err = get(&peer.url, Duration::from_secs(30)).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("larger than 1 MiB"), "{err}");
        let sent = peer.join();
        // The peer stops once the client closed: what it got out fits in the
        // limit plus the sockets' buffers, nowhere near the 256 MiB it had.
        assert!(sent < 64 * 1024 * 1024, "the peer wrote {sent} bytes");
    }

    #[test]
    fn a_refused_connection_is_not_called_a_timeout() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = format!(
            "{:#}",
            get(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5)).unwrap_err()
        );
        assert!(
            err.contains(&format!("connect to 127.0.0.1:{port}")),
            "{err}"
        );
        assert!(!err.contains("no complete answer"), "{err}");
    }

    #[test]
    fn a_complete_answer_on_a_connection_left_open_ends_the_request() {
        let peer = Peer::start(|mut stream| {
            let request = read_request(&mut stream);
            let body = r#"{"status":"ok"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            // Keeps the connection open until the client closes it.
            let _ = stream.read(&mut [0u8; 1]);
            request.len()
        });
        let response = get(&peer.url, Duration::from_secs(30)).unwrap();
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, r#"{"status":"ok"}"#)
        );
        assert!(peer.join() > 0);
    }

    #[test]
    fn the_request_is_the_url_s_host_and_path() {
        let (send, receive) = mpsc::channel();
        let peer = Peer::start(move |mut stream| {
            let request = read_request(&mut stream);
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            send.send(request.clone()).unwrap();
            request.len()
        });
        let response = get(&peer.url, Duration::from_secs(30)).unwrap();
        assert_eq!(response.status, 204);
        let request = receive.recv().unwrap();
        let authority = peer
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/health")
            .to_owned();
        assert!(
            request.starts_with(&format!("GET /health HTTP/1.1\r\nHost: {authority}\r\n")),
            "{request}"
        );
        peer.join();
    }
}
