//! The counters the Python worker keeps, kept alike so its coordinator merges them unchanged
//! (`tidal.gateway.metrics.RequestMetrics` and `tidal.gateway.window.WindowedCounter`).

use serde_json::{json, Value};

/// Upper bounds (seconds) of the Prometheus latency histograms; +Inf is implied.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// The windowed counter's latency bins: 50 us times 2^(i/4), 84 of them (plus one above).
const LAT_BINS: usize = 84;

/// Python's `bisect_left`: the first index whose bound is not below `x`.
fn bisect_left(bounds: &[f64], x: f64) -> usize {
    bounds.partition_point(|b| *b < x)
}

fn lat_bins() -> &'static [f64] {
    static BINS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    BINS.get_or_init(|| (0..LAT_BINS).map(|i| 50e-6 * 2f64.powf(i as f64 / 4.0)).collect())
}

/// The machine's CLOCK_MONOTONIC in seconds: Python's `time.monotonic()`, so both number buckets alike.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Counts for one service or one replica: answers by status class, a latency histogram, in flight, retries.
#[derive(Clone)]
pub struct RequestMetrics {
    by_class: [u64; 5],
    buckets: [u64; 17],
    latency_sum: f64,
    pub in_flight: i64,
    pub retries: u64,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics { by_class: [0; 5], buckets: [0; 17], latency_sum: 0.0, in_flight: 0, retries: 0 }
    }
}

impl RequestMetrics {
    pub fn observe(&mut self, status: u16, seconds: f64) {
        let k = (status / 100) as i64 - 1;
        self.by_class[if (0..5).contains(&k) { k as usize } else { 4 }] += 1;
        self.buckets[bisect_left(&LATENCY_BUCKETS, seconds)] += 1;
        self.latency_sum += seconds;
    }

    /// The wire form of `tidal.gateway.workers._metrics_out`.
    pub fn to_json(&self) -> Value {
        json!([self.by_class, self.buckets, self.latency_sum, self.in_flight, self.retries])
    }
}

/// Completed requests in time buckets over a sliding window (the autoscaler's rate, p90, busy time).
pub struct Window {
    bucket: f64,
    started: f64,
    epoch: Vec<i64>,
    count: Vec<u64>,
    errors: Vec<u64>,
    hist: Vec<Option<Vec<u64>>>,
    busy: Vec<f64>,
}

impl Window {
    pub fn new(started: f64, bucket_seconds: f64, max_window_seconds: f64) -> Window {
        // One more slot than the window spans: the current bucket is partial.
        let n = (max_window_seconds / bucket_seconds).ceil() as usize + 1;
        Window {
            bucket: bucket_seconds,
            started,
            epoch: vec![-1; n],
            count: vec![0; n],
            errors: vec![0; n],
            hist: vec![None; n],
            busy: vec![0.0; n],
        }
    }

    pub fn record(&mut self, now: f64, latency: f64, error: bool) {
        let n = self.epoch.len();
        let idx = (now / self.bucket).floor() as i64;
        let slot = idx.rem_euclid(n as i64) as usize;
        if self.epoch[slot] != idx {
            self.epoch[slot] = idx;
            self.count[slot] = 0;
            self.errors[slot] = 0;
            self.hist[slot] = None;
            self.busy[slot] = 0.0;
        }
        self.count[slot] += 1;
        self.busy[slot] += latency;
        if error {
            self.errors[slot] += 1;
        }
        let hist = self.hist[slot].get_or_insert_with(|| vec![0; LAT_BINS + 1]);
        hist[bisect_left(lat_bins(), latency)] += 1;
    }

    /// The wire form of `tidal.gateway.workers._window_out`.
    pub fn to_json(&self) -> Value {
        json!([self.started, self.epoch, self.count, self.errors, self.hist, self.busy])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_classes_and_buckets() {
        let mut m = RequestMetrics::default();
        m.observe(200, 0.0005);
        m.observe(503, 0.7);
        m.observe(99, 100.0);
        assert_eq!(m.by_class, [0, 1, 0, 0, 2]);
        assert_eq!(m.buckets[0], 1); // 0.0005 is in the first bucket (bounds are inclusive)
        assert_eq!(m.buckets[10], 1);
        assert_eq!(m.buckets[16], 1);
    }

    #[test]
    fn window_buckets_by_the_clock() {
        let mut w = Window::new(10.0, 1.0, 300.0);
        assert_eq!(w.epoch.len(), 301);
        w.record(10.5, 0.001, false);
        w.record(10.9, 0.002, true);
        assert_eq!((w.epoch[10], w.count[10], w.errors[10]), (10, 2, 1));
        w.record(311.2, 0.001, false); // the same slot 301 buckets later starts afresh
        assert_eq!((w.epoch[10], w.count[10], w.errors[10]), (311, 1, 0));
    }
}
