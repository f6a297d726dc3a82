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
    pool: Mutex<BTreeMap<String, PoolClassStats>>,
    starts: Mutex<BTreeMap<&'static str, u64>>,
}

/// One warm pool's figures, for `/metrics` and statuses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolClassStats {
    /// Idle VMs the class keeps.
    pub target: u64,
    /// Ready to be claimed.
    pub ready: u64,
    /// Being cloned or booted.
    pub starting: u64,
    /// Jobs that took a ready VM.
    pub hits: u64,
    /// Jobs of this class that found none ready (and cold-started).
    pub misses: u64,
    /// Age of the oldest ready VM, seconds.
    pub oldest_ready_seconds: f64,
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

    /// A job's VM started, warm (from a pool) or cold.
    pub fn count_start(&self, warm: bool) {
        *lock(&self.starts)
            .entry(if warm { "warm" } else { "cold" })
            .or_insert(0) += 1;
    }

    /// A job of `class` took a pool VM (`hit`) or found none ready.
    pub fn count_pool_claim(&self, class: &str, hit: bool) {
        let mut pool = lock(&self.pool);
        let stats = pool.entry(class.to_string()).or_default();
        if hit {
            stats.hits += 1;
        } else {
            stats.misses += 1;
        }
    }

    /// The pool's current sizes for `class` (its counters stay).
    pub fn set_pool_sizes(&self, class: &str, target: u64, ready: u64, starting: u64, oldest: f64) {
        let mut pool = lock(&self.pool);
        let stats = pool.entry(class.to_string()).or_default();
        stats.target = target;
        stats.ready = ready;
        stats.starting = starting;
        stats.oldest_ready_seconds = oldest;
    }

    /// Every pool's figures, by class.
    pub fn pool_stats(&self) -> BTreeMap<String, PoolClassStats> {
        lock(&self.pool).clone()
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
        out.push_str(
            "# HELP delegate_vm_starts_total Job VMs started, warm (from a pool) or cold.\n\
             # TYPE delegate_vm_starts_total counter\n",
        );
        for kind in ["warm", "cold"] {
            let n = lock(&self.starts).get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "delegate_vm_starts_total{{kind=\"{kind}\"}} {n}");
        }
        self.render_pool(&mut out);
        out
    }

    fn render_pool(&self, out: &mut String) {
        let pool = lock(&self.pool);
        type Field = fn(&PoolClassStats) -> f64;
        let series: [(&str, &str, &str, Field); 6] = [
            (
                "delegate_pool_target",
                "gauge",
                "Idle VMs a warm pool keeps.",
                |s| s.target as f64,
            ),
            (
                "delegate_pool_ready",
                "gauge",
                "Warm pool VMs ready to be claimed.",
                |s| s.ready as f64,
            ),
            (
                "delegate_pool_starting",
                "gauge",
                "Warm pool VMs being cloned or booted.",
                |s| s.starting as f64,
            ),
            (
                "delegate_pool_hits_total",
                "counter",
                "Jobs that took a ready pool VM.",
                |s| s.hits as f64,
            ),
            (
                "delegate_pool_misses_total",
                "counter",
                "Jobs of a pool's class that found no VM ready.",
                |s| s.misses as f64,
            ),
            (
                "delegate_pool_oldest_ready_age_seconds",
                "gauge",
                "Age of a pool's oldest ready VM.",
                |s| s.oldest_ready_seconds,
            ),
        ];
        for (name, kind, help, field) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (class, stats) in pool.iter() {
                let _ = writeln!(out, "{name}{{class=\"{}\"}} {}", label(class), field(stats));
            }
        }
    }
}

/// A label value with `\`, `"` and newlines escaped (Prometheus text format).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

    #[test]
    fn renders_pools_and_starts() {
        let m = Metrics::default();
        m.set_pool_sizes("t:2c4g20g", 3, 2, 1, 12.5);
        m.count_pool_claim("t:2c4g20g", true);
        m.count_pool_claim("t:2c4g20g", false);
        m.count_pool_claim("t:2c4g20g", true);
        m.count_start(true);
        let text = m.render(&[]);
        for line in [
            "delegate_pool_target{class=\"t:2c4g20g\"} 3",
            "delegate_pool_ready{class=\"t:2c4g20g\"} 2",
            "delegate_pool_starting{class=\"t:2c4g20g\"} 1",
            "delegate_pool_hits_total{class=\"t:2c4g20g\"} 2",
            "delegate_pool_misses_total{class=\"t:2c4g20g\"} 1",
            "delegate_pool_oldest_ready_age_seconds{class=\"t:2c4g20g\"} 12.5",
            "delegate_vm_starts_total{kind=\"warm\"} 1",
            "delegate_vm_starts_total{kind=\"cold\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
