//! The route table the coordinator sends: services, their replicas and pooled clients, routing and balancing,
//! following `tidal.gateway.routing`, `tidal.gateway.balancing` and `Gateway.set_service`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::client::Upstream;
use crate::counters::{RequestMetrics, Window};

/// `tidal.gateway.config.GatewaySettings`, as the coordinator dumps it.
#[derive(Deserialize, Clone, Debug)]
pub struct Settings {
    pub domain: String,
    pub path_prefix: String,
    pub deadline_seconds: f64,
    pub max_attempts: u32,
    pub eject_seconds: f64,
    pub connect_timeout_seconds: f64,
    pub max_idle_connections_per_replica: usize,
    pub bucket_seconds: f64,
    pub max_window_seconds: f64,
    pub drain_timeout_seconds: f64,
    pub max_body_bytes: usize,
}

/// `tidal.gateway.config.ReplicaEndpoint` and `ServiceConfig` (the fields the edge reads).
#[derive(Deserialize)]
pub struct EndpointDoc {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub state: String,
}

#[derive(Deserialize)]
pub struct ServiceDoc {
    pub name: String,
    #[serde(default)]
    pub replicas: Vec<EndpointDoc>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    pub deadline_seconds: Option<f64>,
    pub releases: Option<serde_json::Value>,
}

pub fn upstream(settings: &Settings, host: &str, port: u16, max_idle: usize) -> Upstream {
    Upstream::new(host, port, max_idle, Duration::from_secs_f64(settings.connect_timeout_seconds))
}

pub struct ReplicaCounters {
    pub metrics: RequestMetrics,
    pub outstanding: i64,
    pub ejected_until: f64,
    pub failures: u32, // connection failures since its last answer
}

pub struct Replica {
    pub id: String,
    pub host: String,
    pub port: u16,
    /// One pool per replica, so a replica that goes takes exactly its connections with it.
    pub client: Upstream,
    pub c: Mutex<ReplicaCounters>,
}

pub struct ServiceCounters {
    pub metrics: RequestMetrics,
    pub window: Window,
}

pub struct Service {
    pub name: String,
    pub deadline: f64,
    pub replicas: Vec<(Arc<Replica>, bool)>, // (replica, ready)
    pub ready: Vec<Arc<Replica>>,
    /// Whether the edge answers its requests: one release and a ready replica. The rest (a queue
    /// for a service at zero, a rollout's split) is the Python gateway's.
    pub fast: bool,
    pub c: Arc<Mutex<ServiceCounters>>,
}

#[derive(Default)]
pub struct Table {
    hosts: HashMap<String, String>,
    models: HashMap<String, String>,
    names: HashSet<String>,
    prefix: String,
    pub services: HashMap<String, Arc<Service>>,
}

/// Lower-case, without port or trailing dot; IPv6 literals keep their brackets (`routing.normalize_host`).
pub fn normalize_host(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host[..=end].to_string(),
            None => host,
        };
    }
    let host = match host.find(':') {
        Some(colon) => &host[..colon],
        None => &host[..],
    };
    host.trim_end_matches('.').to_string()
}

/// The model name in a TF Serving or V2 model path (`routing.model_in_path`).
pub fn model_in_path(path: &str) -> Option<&str> {
    for p in ["/v1/models/", "/v2/models/"] {
        if let Some(rest) = path.strip_prefix(p) {
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            return if end == 0 { None } else { Some(&rest[..end]) };
        }
    }
    None
}

impl Table {
    pub fn build(docs: Vec<ServiceDoc>, old: &Table, settings: &Settings, now: f64) -> Result<Table, String> {
        let mut t = Table { prefix: settings.path_prefix.clone(), ..Default::default() };
        for d in &docs {
            t.names.insert(d.name.clone());
            let own = format!("{}.{}", d.name, settings.domain);
            for h in std::iter::once(&own).chain(d.hosts.iter()) {
                let key = normalize_host(h);
                let owner = t.hosts.entry(key.clone()).or_insert_with(|| d.name.clone());
                if *owner != d.name {
                    return Err(format!("host '{key}' is already routed to service '{owner}'"));
                }
            }
            for m in &d.models {
                let owner = t.models.entry(m.clone()).or_insert_with(|| d.name.clone());
                if *owner != d.name {
                    return Err(format!("model '{m}' is already served by service '{owner}'"));
                }
            }
        }
        for d in docs {
            let prev = old.services.get(&d.name);
            let c = match prev {
                Some(s) => s.c.clone(),
                None => Arc::new(Mutex::new(ServiceCounters {
                    metrics: RequestMetrics::default(),
                    window: Window::new(now, settings.bucket_seconds, settings.max_window_seconds),
                })),
            };
            let mut ids = HashSet::new();
            let mut replicas = Vec::with_capacity(d.replicas.len());
            for ep in d.replicas {
                if !ids.insert(ep.id.clone()) {
                    return Err(format!("service '{}': replica ids must be unique", d.name));
                }
                // A replica that stays (same id, same address) keeps its connections, counters and requests.
                let kept = prev.and_then(|s| {
                    s.replicas.iter().find(|(r, _)| r.id == ep.id && r.host == ep.host && r.port == ep.port)
                });
                let r = match kept {
                    Some((r, _)) => r.clone(),
                    None => Arc::new(Replica {
                        client: upstream(settings, &ep.host, ep.port, settings.max_idle_connections_per_replica),
                        id: ep.id,
                        host: ep.host,
                        port: ep.port,
                        c: Mutex::new(ReplicaCounters {
                            metrics: RequestMetrics::default(),
                            outstanding: 0,
                            ejected_until: 0.0,
                            failures: 0,
                        }),
                    }),
                };
                replicas.push((r, ep.state == "ready"));
            }
            let ready: Vec<Arc<Replica>> = replicas.iter().filter(|(_, ok)| *ok).map(|(r, _)| r.clone()).collect();
            let fast = d.releases.is_none() && !ready.is_empty();
            let svc = Service {
                deadline: d.deadline_seconds.unwrap_or(settings.deadline_seconds),
                name: d.name.clone(),
                replicas,
                ready,
                fast,
                c,
            };
            t.services.insert(d.name, Arc::new(svc));
        }
        Ok(t)
    }

    /// (service, upstream path) for a request, or None when no service matches (`routing.resolve`).
    pub fn resolve<'a>(&'a self, host: Option<&str>, path: &'a str) -> Option<(&'a Arc<Service>, String)> {
        if let Some(h) = host {
            if let Some(name) = self.hosts.get(&normalize_host(h)) {
                return self.services.get(name).map(|s| (s, path.to_string()));
            }
        }
        if let Some(rest) = path.strip_prefix(self.prefix.as_str()) {
            let (name, up) = match rest.find('/') {
                Some(i) => (&rest[..i], rest[i..].to_string()),
                None => (rest, "/".to_string()),
            };
            return if self.names.contains(name) { self.services.get(name).map(|s| (s, up)) } else { None };
        }
        let model = model_in_path(path)?;
        let name = self.models.get(model)?;
        self.services.get(name).map(|s| (s, path.to_string()))
    }
}

/// Up to this many candidates, scan them all; beyond it, two random choices (`balancing.choose`).
const EXACT_SCAN_LIMIT: usize = 16;

/// Index of the replica to send to, given each candidate's outstanding requests (not empty).
pub fn choose(loads: &[i64], rand: &mut dyn FnMut() -> f64) -> usize {
    let n = loads.len();
    if n == 1 {
        return 0;
    }
    if n > EXACT_SCAN_LIMIT {
        let i = (rand() * n as f64) as usize;
        let mut j = (rand() * (n - 1) as f64) as usize;
        if j >= i {
            j += 1;
        }
        return if loads[i] <= loads[j] { i } else { j };
    }
    let best = *loads.iter().min().unwrap();
    let ties: Vec<usize> = (0..n).filter(|&i| loads[i] == best).collect();
    if ties.len() == 1 {
        return ties[0];
    }
    ties[(rand() * ties.len() as f64) as usize]
}

/// Doubles with each failure in a row, up to 32 times `base` (`proxy.eject_seconds`).
pub fn eject_seconds(base: f64, failures: u32) -> f64 {
    base * 2f64.powi(failures.saturating_sub(1).min(5) as i32)
}

/// The replica for the next attempt: a ready one not tried yet, healthy ones first, least outstanding.
pub fn pick(svc: &Service, tried: &[Arc<Replica>], now: f64) -> Option<Arc<Replica>> {
    let cands: Vec<&Arc<Replica>> = svc.ready.iter().filter(|r| !tried.iter().any(|t| Arc::ptr_eq(t, r))).collect();
    if cands.is_empty() {
        return None;
    }
    let state: Vec<(i64, bool)> = cands
        .iter()
        .map(|r| {
            let c = r.c.lock().unwrap();
            (c.outstanding, c.ejected_until <= now)
        })
        .collect();
    // Every candidate failed recently: try them anyway, one may be back.
    let any_healthy = state.iter().any(|(_, ok)| *ok);
    let idx: Vec<usize> = (0..cands.len()).filter(|&i| !any_healthy || state[i].1).collect();
    if idx.len() == 1 {
        return Some(cands[idx[0]].clone());
    }
    let loads: Vec<i64> = idx.iter().map(|&i| state[i].0).collect();
    let k = choose(&loads, &mut || fastrand::f64());
    Some(cands[idx[k]].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_models() {
        assert_eq!(normalize_host(" Bert.LocalHost.:8501"), "bert.localhost");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(model_in_path("/v1/models/m:predict"), Some("m"));
        assert_eq!(model_in_path("/v2/models/m/infer"), Some("m"));
        assert_eq!(model_in_path("/v2/models/"), None);
        assert_eq!(model_in_path("/v3/models/m"), None);
    }

    #[test]
    fn choose_least_loaded_with_random_ties() {
        let table: &[(&[i64], f64, usize)] =
            &[(&[3, 1, 2], 0.9, 1), (&[1, 0, 0], 0.0, 1), (&[1, 0, 0], 0.99, 2), (&[5], 0.5, 0)];
        for (loads, r, want) in table {
            assert_eq!(choose(loads, &mut || *r), *want, "{loads:?} {r}");
        }
    }

    #[test]
    fn ejection_backoff() {
        assert_eq!(eject_seconds(2.0, 0), 2.0);
        assert_eq!(eject_seconds(2.0, 1), 2.0);
        assert_eq!(eject_seconds(2.0, 3), 8.0);
        assert_eq!(eject_seconds(2.0, 40), 64.0);
    }
}
