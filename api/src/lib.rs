//! The `api` service: the router and its handlers, testable without a socket.
//!
//! [`route`] answers a request from its method and path alone; `main.rs` puts it
//! behind a socket. Every body is built once, at first use, from [`VERSION`].

pub mod config;
pub mod log;

use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Version};

/// The version compiled in: `API_VERSION` at build time, `dev` otherwise.
pub const VERSION: &str = match option_env!("API_VERSION") {
    Some(v) => v,
    None => "dev",
};

/// What every route answers with: a JSON body of a known length.
pub type Body = Full<Bytes>;

/// What every route answers.
pub type Response = hyper::Response<Body>;

/// The methods every route accepts, as the `Allow` header of a 405 says.
pub const ALLOWED_METHODS: &str = "GET, HEAD";

/// The bodies, made once: the version is fixed, so no request formats anything.
struct Bodies {
    root: Bytes,
    health: Bytes,
    ready: Bytes,
    draining: Bytes,
    not_found: Bytes,
    method_not_allowed: Bytes,
}

static BODIES: LazyLock<Bodies> = LazyLock::new(|| {
    let version = log::json_string(VERSION);
    let leak = |s: String| Bytes::from_static(Box::leak(s.into_boxed_str()).as_bytes());
    Bodies {
        root: leak(format!(r#"{{"service":"api","version":{version}}}"#)),
        health: leak(format!(r#"{{"status":"ok","version":{version}}}"#)),
        ready: leak(format!(r#"{{"status":"ready","version":{version}}}"#)),
        draining: leak(format!(r#"{{"status":"draining","version":{version}}}"#)),
        not_found: Bytes::from_static(br#"{"error":"not found"}"#),
        method_not_allowed: Bytes::from_static(br#"{"error":"method not allowed"}"#),
    }
});

/// Whether the service is shutting down: `/ready` answers 503 and every
/// answer closes its connection (`Connection: close`), so that clients move to
/// other replicas while this one still serves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Serving,
    Draining,
}

/// Answers a request: a request without exactly one `Host` header (RFC 9112,
/// 3.2: HTTP/1.1 needs one, and no request may have two) gets 400, any other
/// is answered by [`route`]. While draining, every answer says `Connection: close`.
pub fn handle<B>(req: &Request<B>, state: State) -> Response {
    let mut response = match host_problem(req) {
        Some(problem) => {
            let mut response = json(StatusCode::BAD_REQUEST, Bytes::from_static(problem));
            // The framing of what follows cannot be trusted either.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        None => route(req.method(), req.uri().path(), state),
    };
    if state == State::Draining {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What is wrong with a request's `Host` headers, as the body of a 400.
fn host_problem<B>(req: &Request<B>) -> Option<&'static [u8]> {
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some(br#"{"error":"more than one Host header"}"#),
        // HTTP/1.0 predates Host: only 1.1 and later must send it.
        (None, _) if req.version() >= Version::HTTP_11 => Some(br#"{"error":"no Host header"}"#),
        _ => None,
    }
}

/// The routes:
/// - `GET /` -> 200 `{"service":"api","version":"<v>"}`
/// - `GET /health` -> 200 `{"status":"ok","version":"<v>"}`: the process is alive
///   (the liveness probe), draining or not
/// - `GET /ready` -> 200 `{"status":"ready",...}`, or 503 `{"status":"draining",...}`
///   once shutdown has begun (the readiness probe)
/// - `HEAD` on any of them: the same status and headers, no body
/// - any other method on them: 405 with `Allow: GET, HEAD`
/// - any other path: 404
///
/// Every answer is JSON (`Content-Type: application/json`).
pub fn route(method: &Method, path: &str, state: State) -> Response {
    let bodies = &*BODIES;
    let (status, body) = match (path, state) {
        ("/", _) => (StatusCode::OK, &bodies.root),
        ("/health", _) => (StatusCode::OK, &bodies.health),
        ("/ready", State::Serving) => (StatusCode::OK, &bodies.ready),
        ("/ready", State::Draining) => (StatusCode::SERVICE_UNAVAILABLE, &bodies.draining),
        _ => return json(StatusCode::NOT_FOUND, bodies.not_found.clone()),
    };
    match *method {
        Method::GET => json(status, body.clone()),
        Method::HEAD => {
            // No body, but the length a GET would have, as RFC 9110 asks.
            let mut response = json(status, Bytes::new());
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            response
        }
        _ => {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                bodies.method_not_allowed.clone(),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            response
        }
    }
}

fn json(status: StatusCode, body: Bytes) -> Response {
    let mut response = hyper::Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn call(method: Method, path: &str) -> (StatusCode, hyper::HeaderMap, String) {
        call_in(State::Serving, method, path)
    }

    fn call_in(state: State, method: Method, path: &str) -> (StatusCode, hyper::HeaderMap, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "test")
            .body(())
            .unwrap();
        answer(handle(&req, state))
    }

    fn answer(response: Response) -> (StatusCode, hyper::HeaderMap, String) {
        let (parts, body) = response.into_parts();
        let bytes = collect_ready(body);
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    /// A `Full` body is ready at once: one poll collects it, no runtime needed.
    fn collect_ready(body: Body) -> Bytes {
        let mut collect = std::pin::pin!(body.collect());
        let waker = std::task::Waker::noop();
        match collect
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(Ok(collected)) => collected.to_bytes(),
            other => panic!("a Full body is ready at once: {other:?}"),
        }
    }

    fn content_type(headers: &hyper::HeaderMap) -> &str {
        headers[CONTENT_TYPE].to_str().unwrap()
    }

    #[test]
    fn root_names_the_service_and_its_version() {
        let (status, headers, body) = call(Method::GET, "/");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&headers), "application/json");
        assert_eq!(
            body,
            format!(r#"{{"service":"api","version":"{VERSION}"}}"#)
        );
    }

    #[test]
    fn health_is_ok_with_the_version() {
        let (status, headers, body) = call(Method::GET, "/health");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&headers), "application/json");
        assert_eq!(body, format!(r#"{{"status":"ok","version":"{VERSION}"}}"#));
    }

    #[test]
    fn health_ignores_the_query_string() {
        let (status, _, body) = call(Method::GET, "/health?probe=kubelet");
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(r#"{"status":"ok""#), "{body}");
    }

    #[test]
    fn head_answers_like_get_without_a_body() {
        for path in ["/", "/health", "/ready"] {
            let (get_status, _, get_body) = call(Method::GET, path);
            let (status, headers, body) = call(Method::HEAD, path);
            assert_eq!(status, get_status, "{path}");
            assert_eq!(content_type(&headers), "application/json", "{path}");
            assert_eq!(body, "", "{path}");
            assert_eq!(
                headers[CONTENT_LENGTH].to_str().unwrap(),
                get_body.len().to_string(),
                "{path}: HEAD announces the length of the GET body"
            );
        }
    }

    #[test]
    fn unknown_path_is_a_json_404() {
        for (method, path) in [
            (Method::GET, "/nope"),
            (Method::GET, "/health/"),
            (Method::GET, "/Health"),
            (Method::POST, "/nope"),
        ] {
            let (status, headers, body) = call(method.clone(), path);
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(content_type(&headers), "application/json");
            assert_eq!(body, r#"{"error":"not found"}"#);
        }
    }

    #[test]
    fn wrong_method_is_a_json_405_that_says_what_is_allowed() {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            for path in ["/", "/health", "/ready"] {
                let (status, headers, body) = call(method.clone(), path);
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(headers[ALLOW], "GET, HEAD", "{method} {path}");
                assert_eq!(content_type(&headers), "application/json");
                assert_eq!(body, r#"{"error":"method not allowed"}"#);
            }
        }
    }

    #[test]
    fn ready_says_ready_until_draining_then_503_while_health_stays_200() {
        let (status, headers, body) = call(Method::GET, "/ready");
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(r#"{"status":"ready""#), "{body}");
        assert!(!headers.contains_key(CONNECTION));

        let (status, headers, body) = call_in(State::Draining, Method::GET, "/ready");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with(r#"{"status":"draining""#), "{body}");
        assert_eq!(headers[CONNECTION], "close");

        let (status, headers, body) = call_in(State::Draining, Method::GET, "/health");
        assert_eq!(status, StatusCode::OK, "liveness holds while draining");
        assert_eq!(body, format!(r#"{{"status":"ok","version":"{VERSION}"}}"#));
        assert_eq!(headers[CONNECTION], "close");
    }

    #[test]
    fn a_request_without_exactly_one_host_is_a_400() {
        let none = Request::get("/health").body(()).unwrap();
        let (status, headers, body) = answer(handle(&none, State::Serving));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, r#"{"error":"no Host header"}"#);
        assert_eq!(headers[CONNECTION], "close");

        let two = Request::get("/health")
            .header(HOST, "a")
            .header(HOST, "b")
            .body(())
            .unwrap();
        let (status, _, body) = answer(handle(&two, State::Serving));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, r#"{"error":"more than one Host header"}"#);

        let old = Request::get("/health")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        let (status, _, _) = answer(handle(&old, State::Serving));
        assert_eq!(status, StatusCode::OK, "HTTP/1.0 needs no Host");
    }

    #[test]
    fn every_body_is_valid_json() {
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/health"),
            (Method::GET, "/x"),
            (Method::POST, "/"),
            (Method::GET, "/ready"),
        ] {
            let (_, _, body) = call(method, path);
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(value.is_object(), "not a JSON object: {body}");
        }
    }
}
