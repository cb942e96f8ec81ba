//! When and how long to wait before trying a request again.

use std::time::{Duration, Instant, SystemTime};

/// Retry policy for transient failures (5xx, 429, 408, timeouts, refused or dropped connections).
///
/// Failures are counted per streak: a blob transfer that was making progress before its connection
/// dropped starts a new streak, so a long download over a flaky link completes as long as every
/// attempt moves it forward, while a dead registry fails after `max_attempts` tries or
/// `max_elapsed`, whichever comes first.
///
/// `max_elapsed` is a deadline, not a check made between attempts: it counts from the start of the
/// streak's first attempt, and an attempt still waiting for an answer when it passes is abandoned.
/// So a request that gets no answer at all fails after at most `max_elapsed`, whatever the connect
/// and read timeouts are, and the time it reports is the time that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per streak, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with each further one.
    pub initial_backoff: Duration,
    /// Cap on one wait (and on an honoured `Retry-After`).
    pub max_backoff: Duration,
    /// Cap on the time from the start of a streak's first attempt to giving up (timeouts and
    /// waits included): the whole budget of one request.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The un-jittered wait before retry number `retry` (0-based).
    fn base_delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The wait before retry number `retry`: "equal jitter" (half fixed, half random) so that many
    /// concurrent blob downloads failing together do not come back in lockstep.
    pub(crate) fn delay(&self, retry: u32, random: f64) -> Duration {
        let base = self.base_delay(retry);
        base / 2 + base.mul_f64(random.clamp(0.0, 1.0) / 2.0)
    }
}

/// The state of one streak of failures.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    failures: u32,
    /// When the streak's first attempt started: what the reported time counts from.
    started: Instant,
    /// No attempt goes on past this, and no wait ends after it.
    deadline: Instant,
}

/// Why no further attempt will be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GiveUp {
    pub attempts: u32,
    pub elapsed: Duration,
}

impl Backoff {
    /// A streak starting now, with its first attempt.
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        let started = Instant::now();
        Self {
            deadline: started + policy.max_elapsed,
            policy,
            failures: 0,
            started,
        }
    }

    /// A streak that must also end by `outer`: a request made on behalf of another one (a token
    /// for a manifest) spends the budget of the one it serves.
    pub(crate) fn within(policy: RetryPolicy, outer: Instant) -> Self {
        let mut b = Self::new(policy);
        b.deadline = b.deadline.min(outer);
        b
    }

    /// When the streak must have ended: every attempt is bounded by it.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Records a failure; returns how long to wait before the next attempt, or why not to make one.
    /// `retry_after` is the server's request (429/503), honoured up to `max_backoff`.
    pub(crate) fn failed(&mut self, retry_after: Option<Duration>) -> Result<Duration, GiveUp> {
        self.failures += 1;
        let now = Instant::now();
        let give_up = GiveUp {
            attempts: self.failures,
            elapsed: now - self.started,
        };
        if self.failures >= self.policy.max_attempts {
            return Err(give_up);
        }
        let wait = match retry_after {
            Some(ra) => ra.min(self.policy.max_backoff),
            None => self.policy.delay(self.failures - 1, fastrand::f64()),
        };
        // An attempt that would start at or after the deadline could not get an answer.
        if now + wait >= self.deadline {
            return Err(give_up);
        }
        Ok(wait)
    }

    /// The attempt under way ran into the deadline: the streak ends with it.
    pub(crate) fn out_of_time(&mut self) -> GiveUp {
        self.failures += 1;
        GiveUp {
            attempts: self.failures,
            elapsed: self.started.elapsed(),
        }
    }

    /// The transfer moved forward: what failed before is forgiven, and a new streak (with a
    /// budget of its own) starts now.
    pub(crate) fn progressed(&mut self) {
        self.failures = 0;
        self.started = Instant::now();
        self.deadline = self.started + self.policy.max_elapsed;
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.failures + 1
    }
}

/// `Retry-After`: delta seconds or an HTTP date (RFC 9110 10.2.3), relative to `now`.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Statuses worth another attempt: the server or something in front of it is overloaded or briefly
/// unavailable. 501 (not implemented) and 505 will not change.
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504) || (status > 505 && status < 600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_capped_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(60),
        };
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(4, 1.0), Duration::from_secs(1));
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(1));
        let d = p.delay(2, 0.5);
        assert!(
            d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
            "{d:?}"
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_elapsed: Duration::from_secs(60),
        };
        let mut b = Backoff::new(p.clone());
        assert!(b.failed(None).is_ok());
        assert!(b.failed(None).is_ok());
        assert_eq!(b.failed(None).map_err(|g| g.attempts), Err(3));
        // Progress starts a new streak.
        let mut b = Backoff::new(p);
        assert!(b.failed(None).is_ok());
        assert!(b.failed(None).is_ok());
        b.progressed();
        assert!(b.failed(None).is_ok());
        assert_eq!(b.attempts(), 2);
    }

    #[test]
    fn retry_after_is_capped_and_bounded_by_elapsed() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(3),
        };
        let mut b = Backoff::new(p.clone());
        assert_eq!(
            b.failed(Some(Duration::from_secs(100))),
            Ok(Duration::from_secs(2))
        );
        let mut tight = Backoff::new(RetryPolicy {
            max_elapsed: Duration::from_secs(1),
            ..p
        });
        assert!(tight.failed(Some(Duration::from_secs(2))).is_err());
    }

    #[test]
    fn the_deadline_counts_from_the_streak_start_and_caps_waits() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        };
        let before = Instant::now();
        let b = Backoff::new(p.clone());
        assert!(b.deadline() >= before + Duration::from_secs(60));
        assert!(b.deadline() <= Instant::now() + Duration::from_secs(60));
        // A token fetched for a request spends that request's budget.
        let outer = Instant::now() + Duration::from_secs(2);
        let mut inner = Backoff::within(p, outer);
        assert_eq!(inner.deadline(), outer);
        // A wait that would end past the deadline is not taken.
        assert!(inner.failed(Some(Duration::from_secs(3))).is_err());
        let give_up = inner.out_of_time();
        assert_eq!(give_up.attempts, 2);
        assert!(give_up.elapsed < Duration::from_secs(1));
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").expect("date");
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 416, 501, 505] {
            assert!(!is_transient_status(s), "{s}");
        }
    }
}
