//! The coordinator's channel (`tidal.gateway.workers`): length-prefixed JSON frames on a Unix socket,
//! `routes` (the whole table) and `snapshot` (this process's counters, in the Python worker's form).

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::counters::monotonic;
use crate::proxy::{lock, State};
use crate::table::{ServiceDoc, Table};

const MAX_FRAME: usize = 256 * 1024 * 1024;

/// The next frame; None when the other side closed the channel (or broke the framing).
pub async fn read_frame(rd: &mut OwnedReadHalf) -> Option<Result<Value, String>> {
    let mut head = [0u8; 4];
    rd.read_exact(&mut head).await.ok()?;
    let n = u32::from_be_bytes(head) as usize;
    if n > MAX_FRAME {
        eprintln!("ERROR tidal.gateway.edge: a frame of {n} bytes from the coordinator: closing the channel");
        return None;
    }
    let mut buf = vec![0u8; n];
    rd.read_exact(&mut buf).await.ok()?;
    Some(serde_json::from_slice(&buf).map_err(|e| format!("a frame that is not JSON: {e}")))
}

async fn write_frame(wr: &mut OwnedWriteHalf, msg: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    wr.write_all(&frame).await
}

/// Serve exactly the services of a `routes` frame; nothing changes when they cannot be applied.
pub fn apply(st: &State, msg: &Value) -> Result<usize, String> {
    let services = msg.get("services").cloned().unwrap_or_else(|| json!([]));
    let docs: Vec<ServiceDoc> = serde_json::from_value(services).map_err(|e| format!("bad routes: {e}"))?;
    let old = st.table.load();
    let table = Table::build(docs, &old, &st.settings, monotonic())?;
    let n = table.services.len();
    st.table.store(Arc::new(table));
    Ok(n)
}

/// This process's counters per service (`tidal.gateway.workers.snapshot`); the edge never queues.
pub fn snapshot(st: &State) -> Value {
    let table = st.table.load();
    let mut out = Map::new();
    for (name, svc) in &table.services {
        let mut replicas = Map::new();
        for (r, _) in &svc.replicas {
            let c = lock(&r.c);
            replicas.insert(r.id.clone(), json!([c.metrics.to_json(), c.outstanding, c.ejected_until]));
        }
        let c = lock(&svc.c);
        out.insert(
            name.clone(),
            json!({"metrics": c.metrics.to_json(), "window": c.window.to_json(),
                                        "queued": 0, "replicas": replicas}),
        );
    }
    Value::Object(out)
}

/// Answer the coordinator until it closes the channel.
pub async fn answer(st: Arc<State>, mut rd: OwnedReadHalf, mut wr: OwnedWriteHalf) {
    while let Some(frame) = read_frame(&mut rd).await {
        let reply = match frame {
            Err(e) => json!({"ok": false, "error": e}),
            Ok(msg) => match msg.get("op").and_then(Value::as_str) {
                Some("routes") => match apply(&st, &msg) {
                    Ok(_) => json!({"ok": true}),
                    Err(e) => json!({"ok": false, "error": e}),
                },
                Some("snapshot") => json!({"services": snapshot(&st)}),
                op => json!({"ok": false, "error": format!("no operation {}", op.unwrap_or("(none)"))}),
            },
        };
        if write_frame(&mut wr, &reply).await.is_err() {
            return;
        }
    }
}
