//! A pooled keep-alive HTTP/1.1 client on one task: the request's own task writes the request and reads the
//! whole answer on a pooled connection (no connection task, no channels in between), like
//! `tidal.http.client.HttpClient`. It tells apart `Fail::Connect` (nothing was sent) from `Fail::Lost`.

use std::cell::Cell;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub enum Fail {
    Connect(String), // nothing was sent
    Lost(String),    // sent; the connection broke before a whole answer came
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, Bytes)>, // names lower-case
    pub body: Bytes,
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

static THREADS: OnceLock<usize> = OnceLock::new();

thread_local! {
    static THREAD: Cell<usize> = const { Cell::new(0) };
}

/// How many serving threads there are (once, before any `Upstream`): each keeps its own idle connections.
pub fn set_threads(n: usize) {
    let _ = THREADS.set(n.max(1));
}

/// This thread's number among the serving threads.
pub fn set_thread(i: usize) {
    THREAD.with(|t| t.set(i));
}

/// Keep-alive connections to one address, one list per serving thread: a connection belongs to the thread
/// (and its event loop) that opened it.
pub struct Upstream {
    host: String,
    port: u16,
    idle: Vec<Mutex<Vec<TcpStream>>>,
    max_idle: usize,
    connect_timeout: Duration,
}

enum Once {
    Done(Answer, Option<TcpStream>),
    Failed { started: bool, msg: String },
}

impl Upstream {
    pub fn new(host: &str, port: u16, max_idle: usize, connect_timeout: Duration) -> Upstream {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let idle = (0..*THREADS.get().unwrap_or(&1)).map(|_| Mutex::new(Vec::new())).collect();
        Upstream { host, port, idle, max_idle, connect_timeout }
    }

    fn mine(&self) -> &Mutex<Vec<TcpStream>> {
        &self.idle[THREAD.with(|t| t.get()) % self.idle.len()]
    }

    fn take_idle(&self) -> Option<TcpStream> {
        self.mine().lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_idle(&self, s: TcpStream) {
        let mut idle = self.mine().lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(s);
        }
    }

    async fn connect(&self) -> Result<TcpStream, Fail> {
        let addr = (self.host.as_str(), self.port);
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => Err(Fail::Connect(format!("connect to {}:{} timed out", self.host, self.port))),
            Ok(Err(e)) => Err(Fail::Connect(format!("connect to {}:{} failed: {e}", self.host, self.port))),
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
        }
    }

    /// Send one encoded request; reuse a pooled connection, or open one.
    pub async fn exchange(&self, request: &[u8]) -> Result<Answer, Fail> {
        if let Some(s) = self.take_idle() {
            match once(s, request).await {
                Once::Done(answer, keep) => {
                    if let Some(s) = keep {
                        self.put_idle(s);
                    }
                    return Ok(answer);
                }
                Once::Failed { started: true, msg } => return Err(Fail::Lost(msg)),
                // A pooled connection the server had already closed: a fresh one is always safe.
                Once::Failed { started: false, .. } => {}
            }
        }
        match once(self.connect().await?, request).await {
            Once::Done(answer, keep) => {
                if let Some(s) = keep {
                    self.put_idle(s);
                }
                Ok(answer)
            }
            Once::Failed { msg, .. } => Err(Fail::Lost(msg)),
        }
    }
}

async fn fill(s: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    s.read_buf(buf).await
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

async fn once(mut s: TcpStream, request: &[u8]) -> Once {
    let lost = |started: bool, msg: String| Once::Failed { started, msg };
    if let Err(e) = s.write_all(request).await {
        return lost(false, format!("connection closed by peer: {e}"));
    }
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut started = false;
    // The head (after any 1xx interim answers).
    let (status, headers, framing, keep_alive) = loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let status = resp.code.unwrap_or(0);
                let http11 = resp.version == Some(1);
                let mut headers = Vec::with_capacity(resp.headers.len());
                let (mut length, mut chunked, mut close, mut keep) = (None, false, false, false);
                for h in resp.headers.iter() {
                    let name = h.name.to_ascii_lowercase();
                    let value = h.value;
                    match name.as_str() {
                        "content-length" => {
                            length = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                            if length.is_none() {
                                return lost(true, "malformed response: bad Content-Length".into());
                            }
                        }
                        "transfer-encoding" => chunked = value.to_ascii_lowercase().ends_with(b"chunked"),
                        "connection" => {
                            let v = value.to_ascii_lowercase();
                            close |= v.windows(5).any(|w| w == b"close");
                            keep |= v.windows(10).any(|w| w == b"keep-alive");
                        }
                        _ => {}
                    }
                    headers.push((name, Bytes::copy_from_slice(value)));
                }
                buf.advance(n);
                if (100..200).contains(&status) {
                    continue; // interim answer; the real one follows
                }
                let framing = if status == 204 || status == 304 {
                    Framing::Length(0)
                } else if chunked {
                    Framing::Chunked
                } else if let Some(n) = length {
                    Framing::Length(n)
                } else {
                    Framing::UntilClose
                };
                let keep_alive = !close && (http11 || keep) && !matches!(framing, Framing::UntilClose);
                break (status, headers, framing, keep_alive);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return lost(true, "malformed response: head too large".into());
                }
            }
            Err(e) => return lost(true, format!("malformed response: {e}")),
        }
        match fill(&mut s, &mut buf).await {
            Ok(0) => return lost(started, "connection closed by peer: EOF".into()),
            Ok(_) => started = true,
            Err(e) => return lost(started, format!("connection closed by peer: {e}")),
        }
    };
    let body = match framing {
        Framing::Length(n) => {
            while buf.len() < n {
                match fill(&mut s, &mut buf).await {
                    Ok(0) => return lost(true, "connection closed by peer: EOF in the body".into()),
                    Ok(_) => {}
                    Err(e) => return lost(true, format!("connection closed by peer: {e}")),
                }
            }
            buf.split_to(n).freeze()
        }
        Framing::UntilClose => loop {
            match fill(&mut s, &mut buf).await {
                Ok(0) => break buf.split().freeze(),
                Ok(_) => {}
                Err(e) => return lost(true, format!("connection closed by peer: {e}")),
            }
        },
        Framing::Chunked => match chunked(&mut s, &mut buf).await {
            Ok(b) => b,
            Err(msg) => return lost(true, msg),
        },
    };
    // Bytes beyond the answer: the connection cannot be trusted with another request.
    let keep = if keep_alive && buf.is_empty() { Some(s) } else { None };
    Once::Done(Answer { status, headers, body }, keep)
}

/// Read a chunked body whole (chunk extensions and trailers are read and dropped).
async fn chunked(s: &mut TcpStream, buf: &mut BytesMut) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    loop {
        let line = read_line(s, buf).await?;
        let size_hex = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size = std::str::from_utf8(size_hex)
            .ok()
            .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
            .ok_or_else(|| "malformed response: bad chunk size".to_string())?;
        if size == 0 {
            while !read_line(s, buf).await?.is_empty() {} // trailers, up to the empty line
            return Ok(out.freeze());
        }
        while buf.len() < size + 2 {
            fill_or(s, buf).await?;
        }
        out.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err("malformed response: chunk without its CRLF".into());
        }
        buf.advance(size + 2);
    }
}

async fn fill_or(s: &mut TcpStream, buf: &mut BytesMut) -> Result<(), String> {
    match fill(s, buf).await {
        Ok(0) => Err("connection closed by peer: EOF in the body".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("connection closed by peer: {e}")),
    }
}

async fn read_line(s: &mut TcpStream, buf: &mut BytesMut) -> Result<Bytes, String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err("malformed response: chunk line too long".into());
        }
        fill_or(s, buf).await?;
    }
}
