//! The request path: route, balance, retry and count the common case (`tidal.gateway.proxy.Gateway._attempts`
//! for a service with one release and a ready replica); hand everything else to the Python gateway.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::http::request;
use hyper::{Method, Request, Response};

use crate::client::{Answer, Fail, Upstream};
use crate::counters::monotonic;
use crate::table::{eject_seconds, pick, Replica, Service, ServiceCounters, Settings, Table};

pub type Resp = Response<Full<Bytes>>;

/// RFC 9110 7.6.1: meaningful for one connection only, never forwarded; Content-Length is recomputed.
const HOP_BY_HOP: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];
const INFERENCE_SUFFIXES: [&str; 4] = [":predict", ":classify", ":regress", "/infer"];
/// How long a `/-/` request may take at the coordinator (the Python worker's limit too).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct State {
    pub settings: Settings,
    pub table: ArcSwap<Table>,
    /// The coordinator's private port: `/-/` paths and every request the edge does not answer itself.
    pub admin: Upstream,
    pub id_prefix: String,
    pub ids: AtomicU64,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `tidal.http.server.error_response`: a JSON body with one line saying what went wrong.
pub fn error(status: u16, message: &str) -> Resp {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Whether an attempt whose connection broke after it was sent may go to another replica (`proxy.retry_safe`).
pub fn retry_safe(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::OPTIONS | Method::PUT | Method::DELETE)
        || INFERENCE_SUFFIXES.iter().any(|s| path.ends_with(s))
}

/// Python's `{x:g}` for the deadlines the messages name.
fn fmt_g(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

pub async fn handle(st: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let mut route = None;
    if path.starts_with("/-/") {
        if path == "/-/healthz" && parts.method == Method::GET {
            let mut ok = error(200, "");
            *ok.body_mut() = Full::new(Bytes::from_static(b"{\"status\":\"ok\"}"));
            return ok;
        }
    } else if matches!(parts.method, Method::HEAD | Method::CONNECT | Method::TRACE) {
        let mut resp = error(405, &format!("the gateway does not proxy {} requests", parts.method));
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("DELETE, GET, OPTIONS, PATCH, POST, PUT"));
        return resp;
    } else if parts.headers.contains_key(UPGRADE) {
        return error(400, "protocol upgrades are not supported");
    } else {
        let table = st.table.load();
        let host = parts.headers.get(HOST).and_then(|v| v.to_str().ok());
        if let Some((svc, up)) = table.resolve(host, path) {
            if svc.fast {
                route = Some((svc.clone(), up));
            }
        }
    }
    let limit = st.settings.max_body_bytes;
    let body = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            // The rest of the connection cannot be read as requests: answer, then close it.
            let mut resp = if e.downcast_ref::<LengthLimitError>().is_some() {
                error(413, &format!("request body larger than the limit of {limit} bytes"))
            } else {
                error(400, &format!("malformed HTTP request body: {e}"))
            };
            resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    match route {
        Some((svc, up)) => forward(&st, svc, &up, &parts, body, peer).await,
        None => fallback(&st, &parts, body, peer).await,
    }
}

/// The request as sent on, encoded once: the client's headers less hop-by-hop ones, with X-Forwarded-For,
/// X-Request-Id and Content-Length, then the body (`Gateway._encode`).
fn encode(st: &State, parts: &request::Parts, path: &str, body: &Bytes, peer: SocketAddr) -> Vec<u8> {
    let named: Vec<String> = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if let Some(q) = parts.uri.query() {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff: Option<Vec<u8>> = None;
    let mut has_id = false;
    for (k, v) in parts.headers.iter() {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name) {
            continue;
        }
        if name == "x-forwarded-for" {
            xff = Some(v.as_bytes().to_vec());
            continue;
        }
        has_id |= name == "x-request-id";
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_id {
        let id = st.ids.fetch_add(1, Ordering::Relaxed) + 1;
        out.extend_from_slice(format!("x-request-id: {}{id}\r\n", st.id_prefix).as_bytes());
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prev) = xff {
        out.extend_from_slice(&prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(format!("{}\r\ncontent-length: {}\r\n\r\n", peer.ip(), body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn response_from(up: Answer) -> Resp {
    let mut resp = Response::new(Full::new(up.body));
    *resp.status_mut() = hyper::StatusCode::from_u16(up.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    for (k, v) in up.headers {
        if HOP_BY_HOP.contains(&k.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_maybe_shared(v)) {
            h.append(name, value);
        }
    }
    if !h.contains_key(CONTENT_TYPE) {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// Counts a request of a service when it ends, however it ends (499: the client went first).
struct Flight {
    c: Arc<Mutex<ServiceCounters>>,
    start: f64,
    status: u16,
}

impl Flight {
    fn new(svc: &Service, start: f64) -> Flight {
        lock(&svc.c).metrics.in_flight += 1;
        Flight { c: svc.c.clone(), start, status: 499 }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let end = monotonic();
        let mut c = lock(&self.c);
        c.metrics.in_flight -= 1;
        c.metrics.observe(self.status, end - self.start);
        c.window.record(end, end - self.start, self.status >= 500);
    }
}

/// A request sent to a replica and not yet answered.
struct Outstanding(Arc<Replica>);

impl Outstanding {
    fn new(r: &Arc<Replica>) -> Outstanding {
        let mut c = lock(&r.c);
        c.outstanding += 1;
        c.metrics.in_flight = c.outstanding;
        Outstanding(r.clone())
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let mut c = lock(&self.0.c);
        c.outstanding -= 1;
        c.metrics.in_flight = c.outstanding;
    }
}

fn deadline(svc: &Service) -> Resp {
    error(504, &format!("service '{}' did not answer within its deadline of {}s", svc.name, fmt_g(svc.deadline)))
}

async fn forward(
    st: &State,
    svc: Arc<Service>,
    path: &str,
    parts: &request::Parts,
    body: Bytes,
    peer: SocketAddr,
) -> Resp {
    let start = monotonic();
    let mut flight = Flight::new(&svc, start);
    let resp = attempts(st, &svc, path, parts, body, peer, start).await;
    flight.status = resp.status().as_u16();
    resp
}

async fn attempts(
    st: &State,
    svc: &Service,
    path: &str,
    parts: &request::Parts,
    body: Bytes,
    peer: SocketAddr,
    start: f64,
) -> Resp {
    let request = encode(st, parts, path, &body, peer);
    let mut tried: Vec<Arc<Replica>> = Vec::new();
    let mut last_error = String::new();
    for _ in 0..st.settings.max_attempts {
        let now = monotonic();
        let remaining = start + svc.deadline - now;
        if remaining <= 0.0 {
            return deadline(svc);
        }
        let Some(r) = pick(svc, &tried, now) else { break };
        if !tried.is_empty() {
            lock(&svc.c).metrics.retries += 1;
        }
        let sent = now;
        let result = {
            let _out = Outstanding::new(&r);
            tokio::time::timeout(Duration::from_secs_f64(remaining), r.client.exchange(&request)).await
        };
        match result {
            Err(_) => {
                lock(&r.c).metrics.observe(504, monotonic() - sent);
                return deadline(svc);
            }
            Ok(Ok(up)) => {
                let mut c = lock(&r.c);
                c.failures = 0;
                c.metrics.observe(up.status, monotonic() - sent);
                drop(c);
                return response_from(up);
            }
            Ok(Err(Fail::Connect(msg))) => last_error = msg,
            Ok(Err(Fail::Lost(msg))) => {
                if !retry_safe(&parts.method, path) {
                    lock(&r.c).metrics.observe(502, monotonic() - sent);
                    return error(
                        502,
                        &format!("replica {} of service '{}' failed while answering: {msg}", r.id, svc.name),
                    );
                }
                last_error = format!("replica {}: {msg}", r.id);
            }
        }
        // The connection broke before a whole answer came: skip this replica for a while, try another.
        {
            let mut c = lock(&r.c);
            c.metrics.observe(503, monotonic() - sent);
            c.failures += 1;
            c.ejected_until = monotonic() + eject_seconds(st.settings.eject_seconds, c.failures);
        }
        eprintln!("WARNING tidal.gateway.edge: service {}: replica {} failed to answer ({last_error})", svc.name, r.id);
        tried.push(r);
    }
    if !last_error.is_empty() {
        return error(
            503,
            &format!(
                "no replica of service '{}' could be reached ({} tried); last error: {last_error}",
                svc.name,
                tried.len()
            ),
        );
    }
    error(503, &format!("service '{}' has no ready replica", svc.name))
}

/// A request the edge does not answer goes to the Python gateway, which answers and counts it.
async fn fallback(st: &State, parts: &request::Parts, body: Bytes, peer: SocketAddr) -> Resp {
    let path = parts.uri.path();
    let request = encode(st, parts, path, &body, peer);
    let exchange = st.admin.exchange(&request);
    let result = if path.starts_with("/-/") {
        tokio::time::timeout(ADMIN_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(Fail::Lost(format!("no answer within {}s", ADMIN_TIMEOUT.as_secs()))))
    } else {
        exchange.await // the Python gateway keeps the deadline (and a queue's wait) itself
    };
    match result {
        Ok(up) => response_from(up),
        Err(Fail::Connect(m) | Fail::Lost(m)) => error(503, &format!("the gateway's coordinator did not answer: {m}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_safe_rule() {
        let table = [
            (Method::POST, "/v1/models/m:predict", true),
            (Method::POST, "/v2/models/m/infer", true),
            (Method::POST, "/v1/models/m:other", false),
            (Method::GET, "/v1/models/m", true),
            (Method::PATCH, "/x", false),
            (Method::DELETE, "/x", true),
        ];
        for (m, p, want) in table {
            assert_eq!(retry_safe(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn deadlines_read_like_python() {
        assert_eq!(fmt_g(60.0), "60");
        assert_eq!(fmt_g(2.5), "2.5");
    }
}
