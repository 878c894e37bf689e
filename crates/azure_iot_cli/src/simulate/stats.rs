//! What a run counts: devices connected, messages sent, acknowledged and failed, and the
//! acknowledgement latency histogram; the live progress line and the process's memory.

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters shared by every device task of a run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Devices connected.
    pub(crate) connected: AtomicU64,
    /// Devices that could not connect.
    pub(crate) connect_failed: AtomicU64,
    /// Messages acknowledged by the hub.
    pub(crate) acked: AtomicU64,
    /// Messages that failed (refused, timed out, or the device gave up).
    pub(crate) failed: AtomicU64,
    /// Acknowledgement latency of the acknowledged messages.
    pub(crate) latency: Mutex<Histogram>,
}

impl Counters {
    /// Counts one finished message that took `took` from the send to its outcome.
    pub(crate) fn finished(&self, ok: bool, took: Duration) {
        if ok {
            self.acked.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut latency) = self.latency.lock() {
                latency.record(took);
            }
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The latency at quantile `q` (0 to 1), if any message was acknowledged.
    pub(crate) fn latency_at(&self, q: f64) -> Option<Duration> {
        self.latency.lock().ok().and_then(|l| l.quantile(q))
    }
}

/// Sub-buckets per power of two: values are kept within 1/32 (about 3 %).
const SUB_BUCKETS: u64 = 32;
/// Powers of two of microseconds covered (2^40 µs is about 12 days).
const OCTAVES: usize = 40;

/// A log-linear histogram of durations in microseconds: fixed size (10 KiB), any number of
/// samples, quantiles within about 3 %.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; OCTAVES * SUB_BUCKETS as usize],
            total: 0,
        }
    }
}

impl Histogram {
    fn bucket(micros: u64) -> usize {
        if micros < SUB_BUCKETS {
            return micros as usize;
        }
        let octave = u64::from(63 - micros.leading_zeros()) - SUB_BUCKETS.trailing_zeros() as u64;
        let sub = (micros >> octave) - SUB_BUCKETS;
        let index = (octave + 1) * SUB_BUCKETS + sub;
        (index as usize).min(OCTAVES * SUB_BUCKETS as usize - 1)
    }

    /// The largest value a bucket holds.
    fn upper(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let octave = index / SUB_BUCKETS - 1;
        let sub = index % SUB_BUCKETS + SUB_BUCKETS;
        ((sub + 1) << octave) - 1
    }

    /// Adds one sample.
    pub(crate) fn record(&mut self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(micros)] += 1;
        self.total += 1;
    }

    /// The value at quantile `q` (0 to 1; rounded up to its bucket's upper bound).
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_micros(Self::upper(index)));
            }
        }
        None
    }
}

/// This process's resident memory in bytes (Linux; `None` elsewhere).
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Milliseconds with two decimals, for humans.
pub(crate) fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Redraws one progress line on stderr every 200 ms until dropped (a terminal only).
pub(crate) async fn show_progress(counters: std::sync::Arc<Counters>, devices: u64, total: u64) {
    let started = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(200));
    let mut last = (Instant::now(), 0u64);
    loop {
        every.tick().await;
        let acked = counters.acked.load(Ordering::Relaxed);
        let failed = counters.failed.load(Ordering::Relaxed);
        let connected = counters.connected.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (acked - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, acked);
        let p99 = counters
            .latency_at(0.99)
            .map_or_else(|| "-".to_owned(), millis);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{:>6.1} s  connected {connected}/{devices}  sent {}/{total}  acknowledged {acked}  \
             failed {failed}  {rate:.0} msgs/s  p99 {p99}   ",
            started.elapsed().as_secs_f64(),
            acked + failed,
        );
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_bounds_hold_it_within_3_percent() {
        let mut previous_upper = None;
        for index in 0..OCTAVES * SUB_BUCKETS as usize {
            let upper = Histogram::upper(index);
            assert_eq!(Histogram::bucket(upper), index, "upper bound of {index}");
            if let Some(p) = previous_upper {
                assert_eq!(Histogram::bucket(p + 1), index, "lower bound of {index}");
                let lower = p + 1;
                assert!(
                    (upper - lower) as f64 <= lower as f64 / 31.0,
                    "{lower}..={upper}"
                );
            }
            previous_upper = Some(upper);
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let near = |q: f64, expected_ms: f64| {
            let got = h.quantile(q).unwrap().as_secs_f64() * 1000.0;
            assert!(
                got >= expected_ms && got <= expected_ms * 1.04,
                "q {q}: {got} ms, expected about {expected_ms}"
            );
        };
        near(0.5, 500.0);
        near(0.99, 990.0);
        near(1.0, 1000.0);
        near(0.0, 1.0);
        h.record(Duration::from_secs(100 * 86_400));
        assert!(h.quantile(1.0).unwrap() >= Duration::from_secs(86_400));
    }
}
