//! tidal-edge: the gateway's data plane in compiled code. Started by the Python gateway's coordinator in the
//! place of a worker (`tidal.gateway.workers`): it serves the gateway's port with the routes the coordinator
//! sends, answers the common case itself (a TF Serving or V2 request for a service with one release and a
//! ready replica) and hands every other request to the coordinator's private port, so the Python gateway
//! stays the one source of its behaviour. SIGTERM, or the channel closing, drains the requests in flight.

mod channel;
mod client;
mod counters;
mod proxy;
mod table;

use std::convert::Infallible;
use std::os::fd::FromRawFd;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::signal::unix::{signal, SignalKind};

use crate::proxy::State;

// A faster allocator than glibc's for a proxy's many small, short-lived buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use crate::table::{Settings, Table};

const USAGE: &str = "usage: tidal-edge --listen-fd N --channel-fd M --admin-port P --settings JSON \
[--threads T] [--index I] [--host H]";

struct Args {
    listen_fd: i32,
    channel_fd: i32,
    admin_port: u16,
    settings: Settings,
    threads: usize,
    index: u32,
}

fn parse_args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| -> Option<&String> { argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)) };
    let need = |name: &str| get(name).ok_or_else(|| format!("{name} is required; {USAGE}"));
    let num = |name: &str, v: &String| format!("{name} takes a number, got {v:?}");
    let listen_fd = need("--listen-fd")?.parse().map_err(|_| num("--listen-fd", need("--listen-fd").unwrap()))?;
    let channel_fd = need("--channel-fd")?.parse().map_err(|_| num("--channel-fd", need("--channel-fd").unwrap()))?;
    let admin_port = need("--admin-port")?.parse().map_err(|_| num("--admin-port", need("--admin-port").unwrap()))?;
    let settings = serde_json::from_str(need("--settings")?).map_err(|e| format!("--settings: {e}"))?;
    let threads = match get("--threads") {
        Some(v) => v.parse::<usize>().ok().filter(|t| (1..=256).contains(t)).ok_or_else(|| num("--threads", v))?,
        None => 1,
    };
    let index = match get("--index") {
        Some(v) => v.parse().map_err(|_| num("--index", v))?,
        None => 0,
    };
    Ok(Args { listen_fd, channel_fd, admin_port, settings, threads, index })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tidal-edge: error: {e}");
            return ExitCode::from(2);
        }
    };
    client::set_threads(args.threads);
    // This thread: the coordinator's channel and the signals. The requests: `threads` threads, each with an
    // event loop of its own accepting on the port, like nginx's workers (no hand-offs between threads).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidal-edge: error: cannot start its runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let index = args.index;
    match runtime.block_on(serve(args)) {
        Ok(reason) => {
            eprintln!("INFO tidal.gateway.edge: gateway edge {index} {reason}");
            runtime.shutdown_timeout(Duration::from_secs(1));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tidal-edge: error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: Args) -> Result<String, String> {
    // SAFETY: the coordinator passed these descriptors to this process for it alone (pass_fds).
    let listener = unsafe { std::net::TcpListener::from_raw_fd(args.listen_fd) };
    let channel = unsafe { std::os::unix::net::UnixStream::from_raw_fd(args.channel_fd) };
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    listener.set_nonblocking(true).map_err(|e| io("its listening socket", e))?;
    channel.set_nonblocking(true).map_err(|e| io("its channel", e))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let (mut rd, wr) = tokio::net::UnixStream::from_std(channel).map_err(|e| io("its channel", e))?.into_split();

    let st = Arc::new(State {
        admin: table::upstream(&args.settings, "127.0.0.1", args.admin_port, 64),
        id_prefix: format!("{:x}-", std::process::id()),
        ids: AtomicU64::new(0),
        table: ArcSwap::from_pointee(Table::default()),
        settings: args.settings,
    });
    // Its first frame: the table it serves from its first request.
    match channel::read_frame(&mut rd).await {
        None => return Ok("exited: its coordinator was gone before it started".into()),
        Some(Ok(first)) => {
            if let Err(e) = channel::apply(&st, &first) {
                eprintln!("WARNING tidal.gateway.edge: the first routes cannot be applied ({e}); starting with none");
            }
        }
        Some(Err(e)) => eprintln!("WARNING tidal.gateway.edge: {e}; starting with no routes"),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut threads = Vec::with_capacity(args.threads);
    for i in 0..args.threads {
        let l = listener.try_clone().map_err(|e| io("its listening socket", e))?;
        let (st, stop) = (st.clone(), stop_rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("edge-{i}"))
            .spawn(move || {
                client::set_thread(i);
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(accept(l, st, stop)),
                    Err(e) => eprintln!("ERROR tidal.gateway.edge: thread {i} cannot start its runtime: {e}"),
                }
            })
            .map_err(|e| io("a serving thread", e))?;
        threads.push(t);
    }
    drop(listener);
    eprintln!(
        "INFO tidal.gateway.edge: gateway edge {} (pid {}) serving on port {port} with {} service(s), {} thread(s)",
        args.index,
        std::process::id(),
        st.table.load().services.len(),
        args.threads
    );
    let mut channel_task = tokio::spawn(channel::answer(st.clone(), rd, wr));
    let mut term = signal(SignalKind::terminate()).map_err(|e| io("SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| io("SIGINT", e))?;
    let reason = tokio::select! {
        _ = term.recv() => "was stopped by SIGTERM",
        _ = int.recv() => "was stopped by SIGINT",
        _ = &mut channel_task => "was stopped by its coordinator's exit",
    };
    // No new connections from here (the coordinator keeps the socket, so none is refused); the requests in
    // flight finish, up to the drain timeout, while the channel still answers.
    let _ = stop_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    Ok(format!("{reason} (it drained its requests first)"))
}

/// One serving thread: accept on the port until told to stop, then drain its connections.
async fn accept(listener: std::net::TcpListener, st: Arc<State>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ERROR tidal.gateway.edge: cannot listen: {e}");
            return;
        }
    };
    let http = {
        let mut b = hyper::server::conn::http1::Builder::new();
        // Heads larger than this (request line and headers) or with more headers get 431, as from the Python
        // gateway's server (its limits are 32 KiB and 100 headers; the edge's buffer is 64 KiB).
        b.timer(TokioTimer::new()).keep_alive(true).max_buf_size(64 * 1024).max_headers(100);
        b
    };
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {  // e.g. out of descriptors: the connection waits in the backlog meanwhile
                        eprintln!("WARNING tidal.gateway.edge: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(proxy::handle(st, req, peer).await) }
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move { let _ = conn.await; });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let drain = Duration::from_secs_f64(st.settings.drain_timeout_seconds);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}
