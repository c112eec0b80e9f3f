//! Just enough HTTP/1.1 to ask a service a question: one GET, `Connection:
//! close`, read to the end. A full client would cost more compile time than
//! `sanity` and `bench` are worth.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET url` where url is `http://HOST[:PORT][/PATH]`, every step bounded by `timeout`.
pub fn get(url: &str, timeout: Duration) -> Result<Response> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("unsupported URL {url:?}: only http://HOST[:PORT]/PATH"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("invalid URL {url:?}: no host");
    }
    let addr_text = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = addr_text
        .to_socket_addrs()
        .with_context(|| format!("resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;

    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: xtask\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .with_context(|| format!("send request to {url}"))?;

    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("read response from {url}"))?;
    parse(&raw).with_context(|| format!("response from {url}"))
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
}
