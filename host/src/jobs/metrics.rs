//! Counters and histograms for `/metrics`, rendered in the Prometheus text
//! format (0.0.4) without a metrics library: the set is small and fixed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use delegate_proto::JobState;

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// The engine's measurements.
#[derive(Default)]
pub struct Metrics {
    provisioning: Mutex<Histogram>,
    run: Mutex<Histogram>,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    events: AtomicU64,
    destroyed: AtomicU64,
}

impl Metrics {
    /// Time from provisioning start to a guest with its bootstrap.
    pub fn observe_provisioning(&self, seconds: f64) {
        lock(&self.provisioning).observe(seconds);
    }

    /// Time from the job's start to its end.
    pub fn observe_run(&self, seconds: f64) {
        lock(&self.run).observe(seconds);
    }

    /// One callback request on `route` answered with `status`.
    pub fn count_request(&self, route: &'static str, status: u16) {
        *lock(&self.requests).entry((route, status)).or_insert(0) += 1;
    }

    /// Events taken from guests.
    pub fn count_events(&self, n: usize) {
        self.events.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A VM destroyed.
    pub fn count_destroyed(&self) {
        self.destroyed.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with job counts by state.
    pub fn render(&self, jobs: &[(JobState, u64)]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP delegate_jobs Jobs in the store by state.\n# TYPE delegate_jobs gauge\n",
        );
        for state in JobState::ALL {
            let n = jobs
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "delegate_jobs{{state=\"{state}\"}} {n}");
        }
        lock(&self.provisioning).render(
            &mut out,
            "delegate_provisioning_duration_seconds",
            "Time from provisioning start until the guest had its bootstrap.",
        );
        lock(&self.run).render(
            &mut out,
            "delegate_job_duration_seconds",
            "Time from provisioning start until the job was final.",
        );
        out.push_str(
            "# HELP delegate_callback_requests_total Callback API requests by route and status.\n\
             # TYPE delegate_callback_requests_total counter\n",
        );
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "delegate_callback_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP delegate_guest_events_total Guest events stored.\n\
             # TYPE delegate_guest_events_total counter\n\
             delegate_guest_events_total {}",
            self.events.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP delegate_vms_destroyed_total VMs destroyed.\n\
             # TYPE delegate_vms_destroyed_total counter\n\
             delegate_vms_destroyed_total {}",
            self.destroyed.load(Ordering::Relaxed)
        );
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_run(0.3);
        m.observe_run(7.0);
        m.count_request("events", 200);
        let text = m.render(&[(JobState::Running, 2)]);
        assert!(text.contains("delegate_jobs{state=\"running\"} 2"));
        assert!(text.contains("delegate_jobs{state=\"pending\"} 0"));
        assert!(text.contains("delegate_job_duration_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("delegate_job_duration_seconds_bucket{le=\"10\"} 2"));
        assert!(text.contains("delegate_job_duration_seconds_count 2"));
        assert!(
            text.contains("delegate_callback_requests_total{route=\"events\",status=\"200\"} 1")
        );
    }
}
