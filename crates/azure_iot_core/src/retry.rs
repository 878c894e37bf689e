//! Retry policies and error classification.
//!
//! Every client decides *whether* to retry from an [`ErrorClass`] (transient, throttled or
//! permanent) and *when* from a [`RetryPolicy`]. A policy is a pure function of a
//! [`RetryAttempt`]: the attempt number, the class of the last error, the time spent so far
//! and a jitter sample. It holds no clock and no random generator, so it is deterministic in
//! tests; drivers build attempts with [`RetryAttempt::new`], which draws the jitter.
//!
//! Provided policies:
//! * [`NoRetry`]: fail on the first error.
//! * [`ExponentialBackoff`] (the default): the C# and Java SDKs' schedule, with a slower one
//!   for throttling errors in the manner of the Node SDK. See its docs for the numbers.
//! * [`FixedInterval`]: the Python SDK's constant interval.
//!
//! Custom policies implement [`RetryPolicy`]; a closure
//! `Fn(&RetryAttempt) -> Option<Duration>` is one.
//!
//! Permanent errors (bad credentials, unknown device, malformed request) are never retried by
//! the provided policies: retrying them only hammers the hub.

use std::fmt;
use std::time::Duration;

/// How an error bears on retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Worth retrying soon: network drop, timeout, server busy, internal error.
    Transient,
    /// Worth retrying, but slowly: the hub said it is throttling.
    Throttled,
    /// Retrying will not help: unauthorized, not found, bad request, too large.
    Permanent,
}

impl ErrorClass {
    /// Whether a retry may succeed.
    pub fn is_retryable(self) -> bool {
        self != ErrorClass::Permanent
    }

    /// Classifies an HTTP status from the hub (also used for MQTT twin response statuses).
    ///
    /// 408, 500, 502, 503, 504 are transient; 429 is throttled; 403 (quota) is transient as
    /// the C# SDK treats it, because daily quotas reset; every other status ≥ 300 is
    /// permanent. Statuses below 300 are not errors and classify as permanent.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            429 => ErrorClass::Throttled,
            403 | 408 | 500 | 502 | 503 | 504 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }

    /// Classifies an MQTT CONNACK return code.
    ///
    /// 3 (server unavailable) is transient; 1, 2, 4 and 5 (bad protocol, bad client id, bad
    /// credentials, not authorized) are permanent, as the C#, Python and Node SDKs treat them.
    pub fn from_connack_code(code: u8) -> Self {
        match code {
            3 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

/// Implemented by error types that know whether retrying may help.
pub trait Classify {
    /// The error's class.
    fn error_class(&self) -> ErrorClass;

    /// Whether a retry may succeed.
    fn is_transient(&self) -> bool {
        self.error_class().is_retryable()
    }
}

/// What a policy knows when it decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryAttempt {
    /// 0 for the first retry after the first failure, then 1, 2, ...
    pub attempt: u32,
    /// The class of the error that just happened.
    pub class: ErrorClass,
    /// Time since the operation (or connection attempt series) began.
    pub elapsed: Duration,
    /// A uniform sample in `[0, 1)` for jitter.
    pub jitter: f64,
}

impl RetryAttempt {
    /// An attempt with a fresh jitter sample from the operating system's random source.
    pub fn new(attempt: u32, class: ErrorClass, elapsed: Duration) -> Self {
        Self {
            attempt,
            class,
            elapsed,
            jitter: random_unit(),
        }
    }

    /// Replaces the jitter sample (for deterministic tests); clamped into `[0, 1)`.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 0.999_999)
        } else {
            0.5
        };
        self
    }
}

/// Decides whether and when to retry.
pub trait RetryPolicy: Send + Sync {
    /// `Some(delay)` to retry after `delay`, `None` to give up.
    fn next_delay(&self, attempt: &RetryAttempt) -> Option<Duration>;
}

impl<F> RetryPolicy for F
where
    F: Fn(&RetryAttempt) -> Option<Duration> + Send + Sync,
{
    fn next_delay(&self, attempt: &RetryAttempt) -> Option<Duration> {
        self(attempt)
    }
}

/// Never retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoRetry;

impl RetryPolicy for NoRetry {
    fn next_delay(&self, _: &RetryAttempt) -> Option<Duration> {
        None
    }
}

/// Retries after a constant interval (the Python SDK's policy, which defaults to 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedInterval {
    /// Time between attempts.
    pub interval: Duration,
    /// Give up after this many retries (`None`: never).
    pub max_retries: Option<u32>,
}

impl RetryPolicy for FixedInterval {
    fn next_delay(&self, attempt: &RetryAttempt) -> Option<Duration> {
        if !attempt.class.is_retryable() || self.max_retries.is_some_and(|m| attempt.attempt >= m) {
            return None;
        }
        Some(self.interval)
    }
}

/// Exponential backoff with jitter.
///
/// For retry `n` (0-based) after a transient error:
///
/// ```text
/// n = 0 and fast_first_retry  →  0
/// otherwise                   →  min(min_backoff + (2ⁿ − 1) × delta × U[0.8, 1.2), max_backoff)
/// ```
///
/// Defaults (the C# and Java SDKs'): `min_backoff` 100 ms, `delta` 100 ms, `max_backoff`
/// 10 s, fast first retry, no attempt limit. Throttling errors use the same formula with the
/// Node SDK's throttling numbers instead: 10 s minimum, 5 s delta, 60 s maximum, and no fast
/// first retry. Permanent errors are not retried. `max_retries` and `max_elapsed` bound the
/// whole series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    /// Smallest delay (after the fast first retry).
    pub min_backoff: Duration,
    /// Largest delay.
    pub max_backoff: Duration,
    /// The step that doubles with each attempt.
    pub delta: Duration,
    /// Retry immediately the first time.
    pub fast_first_retry: bool,
    /// Smallest delay after a throttling error.
    pub throttled_min_backoff: Duration,
    /// Largest delay after a throttling error.
    pub throttled_max_backoff: Duration,
    /// The doubling step after a throttling error.
    pub throttled_delta: Duration,
    /// Give up after this many retries (`None`: never).
    pub max_retries: Option<u32>,
    /// Give up once this much time has passed since the first attempt (`None`: never).
    pub max_elapsed: Option<Duration>,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            delta: Duration::from_millis(100),
            fast_first_retry: true,
            throttled_min_backoff: Duration::from_secs(10),
            throttled_max_backoff: Duration::from_secs(60),
            throttled_delta: Duration::from_secs(5),
            max_retries: None,
            max_elapsed: None,
        }
    }
}

impl RetryPolicy for ExponentialBackoff {
    fn next_delay(&self, attempt: &RetryAttempt) -> Option<Duration> {
        if !attempt.class.is_retryable()
            || self.max_retries.is_some_and(|m| attempt.attempt >= m)
            || self.max_elapsed.is_some_and(|m| attempt.elapsed >= m)
        {
            return None;
        }
        let throttled = attempt.class == ErrorClass::Throttled;
        if attempt.attempt == 0 && self.fast_first_retry && !throttled {
            return Some(Duration::ZERO);
        }
        let (min, max, delta) = if throttled {
            (
                self.throttled_min_backoff,
                self.throttled_max_backoff,
                self.throttled_delta,
            )
        } else {
            (self.min_backoff, self.max_backoff, self.delta)
        };
        let growth = 2f64.powi(attempt.attempt.min(62) as i32) - 1.0;
        let factor = 0.8 + 0.4 * attempt.jitter.clamp(0.0, 1.0);
        let nanos = min.as_nanos() as f64 + growth * delta.as_nanos() as f64 * factor;
        let delay = if nanos.is_finite() && nanos < max.as_nanos() as f64 {
            Duration::from_nanos(nanos.round() as u64)
        } else {
            max
        };
        Some(delay.min(max))
    }
}

/// Any policy behind a pointer, for storing in client options.
#[derive(Clone)]
pub struct SharedRetryPolicy(std::sync::Arc<dyn RetryPolicy>);

impl SharedRetryPolicy {
    /// Wraps `policy`.
    pub fn new(policy: impl RetryPolicy + 'static) -> Self {
        Self(std::sync::Arc::new(policy))
    }
}

impl Default for SharedRetryPolicy {
    fn default() -> Self {
        Self::new(ExponentialBackoff::default())
    }
}

impl RetryPolicy for SharedRetryPolicy {
    fn next_delay(&self, attempt: &RetryAttempt) -> Option<Duration> {
        self.0.next_delay(attempt)
    }
}

impl fmt::Debug for SharedRetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedRetryPolicy")
    }
}

/// A uniform sample in `[0, 1)` from the operating system's random source (0.5 if it fails).
pub fn random_unit() -> f64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits give every representable value in [0, 1) with equal spacing.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attempt(n: u32, class: ErrorClass, jitter: f64) -> RetryAttempt {
        RetryAttempt::new(n, class, Duration::ZERO).with_jitter(jitter)
    }

    #[test]
    fn exponential_schedule_matches_the_csharp_sdk() {
        let p = ExponentialBackoff::default();
        let t = ErrorClass::Transient;
        assert_eq!(p.next_delay(&attempt(0, t, 0.5)), Some(Duration::ZERO));
        // jitter 0.5 → factor 1.0: 100 ms + (2^n - 1) × 100 ms.
        assert_eq!(
            p.next_delay(&attempt(1, t, 0.5)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            p.next_delay(&attempt(2, t, 0.5)),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            p.next_delay(&attempt(3, t, 0.0)),
            Some(Duration::from_millis(660))
        );
        assert_eq!(
            p.next_delay(&attempt(7, t, 0.5)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            p.next_delay(&attempt(u32::MAX, t, 0.9)),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn throttling_backs_off_slower_and_permanent_errors_stop() {
        let p = ExponentialBackoff::default();
        let th = ErrorClass::Throttled;
        assert_eq!(
            p.next_delay(&attempt(0, th, 0.5)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            p.next_delay(&attempt(1, th, 0.5)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            p.next_delay(&attempt(5, th, 0.5)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p.next_delay(&attempt(0, ErrorClass::Permanent, 0.5)), None);
    }

    #[test]
    fn limits_end_the_series() {
        let p = ExponentialBackoff {
            max_retries: Some(3),
            max_elapsed: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        assert!(
            p.next_delay(&attempt(2, ErrorClass::Transient, 0.5))
                .is_some()
        );
        assert_eq!(p.next_delay(&attempt(3, ErrorClass::Transient, 0.5)), None);
        let late = RetryAttempt {
            elapsed: Duration::from_secs(60),
            ..attempt(1, ErrorClass::Transient, 0.5)
        };
        assert_eq!(p.next_delay(&late), None);
        let fixed = FixedInterval {
            interval: Duration::from_secs(10),
            max_retries: Some(1),
        };
        assert_eq!(
            fixed.next_delay(&attempt(0, ErrorClass::Throttled, 0.1)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            fixed.next_delay(&attempt(1, ErrorClass::Transient, 0.1)),
            None
        );
        assert_eq!(
            NoRetry.next_delay(&attempt(0, ErrorClass::Transient, 0.1)),
            None
        );
    }

    #[test]
    fn closures_and_shared_policies_are_policies() {
        let custom = SharedRetryPolicy::new(|a: &RetryAttempt| {
            (a.attempt < 2).then(|| Duration::from_secs(u64::from(a.attempt) + 1))
        });
        assert_eq!(
            custom.next_delay(&attempt(1, ErrorClass::Transient, 0.0)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            custom.next_delay(&attempt(2, ErrorClass::Transient, 0.0)),
            None
        );
    }

    #[test]
    fn classification_follows_the_official_sdks() {
        assert_eq!(ErrorClass::from_http_status(429), ErrorClass::Throttled);
        for s in [403, 408, 500, 502, 503, 504] {
            assert_eq!(
                ErrorClass::from_http_status(s),
                ErrorClass::Transient,
                "{s}"
            );
        }
        for s in [400, 401, 404, 409, 412, 413] {
            assert_eq!(
                ErrorClass::from_http_status(s),
                ErrorClass::Permanent,
                "{s}"
            );
        }
        assert_eq!(ErrorClass::from_connack_code(3), ErrorClass::Transient);
        for c in [1, 2, 4, 5] {
            assert_eq!(ErrorClass::from_connack_code(c), ErrorClass::Permanent);
        }
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(n in any::<u32>(), jitter in any::<f64>(), throttled in any::<bool>()) {
            let p = ExponentialBackoff::default();
            let class = if throttled { ErrorClass::Throttled } else { ErrorClass::Transient };
            let delay = p.next_delay(&attempt(n, class, jitter)).unwrap();
            let max = if throttled { p.throttled_max_backoff } else { p.max_backoff };
            prop_assert!(delay <= max);
            if n > 0 || throttled {
                let min = if throttled { p.throttled_min_backoff } else { p.min_backoff };
                prop_assert!(delay >= min);
            }
        }
    }
}
