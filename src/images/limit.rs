//! A rate limiter per key under one global bound: token buckets, pure (the caller passes the time, as the
//! [`Duration`] since an origin of its choosing) and bounded in memory. Used to bound the work any one namespace
//! can make regcred do from what it writes ([`super::pulls`]).

use std::collections::HashMap;
use std::time::Duration;

/// A bucket's shape: up to `burst` at once, then one more each `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    tokens: u32,
    /// When `tokens` was last brought up to date.
    at: Duration,
}

impl Bucket {
    fn full(rate: Rate, now: Duration) -> Self {
        Self { tokens: rate.burst, at: now }
    }

    /// Adds the tokens earned since `at`, up to the burst.
    fn refill(&mut self, rate: Rate, now: Duration) {
        let every = rate.every.as_nanos().max(1);
        let earned = now.saturating_sub(self.at).as_nanos() / every;
        if earned == 0 {
            return;
        }
        let tokens = u128::from(self.tokens).saturating_add(earned);
        if tokens >= u128::from(rate.burst) {
            self.tokens = rate.burst;
            self.at = now;
        } else {
            // Below the burst: keep the fraction of a token already earned.
            self.tokens = u32::try_from(tokens).unwrap_or(rate.burst);
            let spent = u64::try_from(earned.saturating_mul(every)).unwrap_or(u64::MAX);
            self.at = self.at.saturating_add(Duration::from_nanos(spent));
        }
    }
}

/// Token buckets per key (at most `max_keys` of them) and one global bucket that every allowed call also takes
/// from.
#[derive(Debug)]
pub struct Limiter {
    per_key: Rate,
    global: Rate,
    max_keys: usize,
    buckets: HashMap<String, Bucket>,
    all: Bucket,
}

impl Limiter {
    pub fn new(per_key: Rate, global: Rate, max_keys: usize) -> Self {
        Self { per_key, global, max_keys, buckets: HashMap::new(), all: Bucket::full(global, Duration::ZERO) }
    }

    /// Whether `key` may do one more thing at `now`; takes a token from its bucket and the global one if so.
    /// A key over its rate, any key once the global rate is spent, and a new key while `max_keys` keys still
    /// hold buckets that are not full, are refused.
    pub fn allow(&mut self, key: &str, now: Duration) -> bool {
        self.all.refill(self.global, now);
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            // A full bucket says nothing a new one would not: forget those.
            let (rate, max) = (self.per_key, self.max_keys);
            self.buckets.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < rate.burst
            });
            if self.buckets.len() >= max {
                return false;
            }
        }
        let rate = self.per_key;
        let bucket = self.buckets.entry(key.to_owned()).or_insert_with(|| Bucket::full(rate, now));
        bucket.refill(rate, now);
        if bucket.tokens == 0 || self.all.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        self.all.tokens -= 1;
        true
    }

    /// Keys holding a bucket.
    pub fn keys(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// Runs `calls` (key, seconds) through a limiter and returns which were allowed.
    fn run(per_key: (u32, u64), global: (u32, u64), max_keys: usize, calls: &[(&str, u64)]) -> Vec<bool> {
        let rate = |(burst, secs): (u32, u64)| Rate { burst, every: S * u32::try_from(secs).unwrap() };
        let mut limiter = Limiter::new(rate(per_key), rate(global), max_keys);
        let out = calls.iter().map(|(k, t)| limiter.allow(k, S * u32::try_from(*t).unwrap())).collect();
        assert!(limiter.keys() <= max_keys);
        out
    }

    #[test]
    fn each_key_gets_its_burst_then_its_rate_and_all_keys_together_the_global_bound() {
        type Case<'a> = (&'a str, (u32, u64), (u32, u64), usize, &'a [(&'a str, u64)], &'a [bool]);
        let (t, f) = (true, false);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (
                "a burst, then refused until a token is earned",
                (2, 10),
                (100, 1),
                10,
                &[("a", 0), ("a", 0), ("a", 0), ("a", 9), ("a", 10), ("a", 10)],
                &[t, t, f, f, t, f],
            ),
            (
                "idle time earns no more than the burst",
                (2, 10),
                (100, 1),
                10,
                &[("a", 0), ("a", 0), ("a", 1000), ("a", 1000), ("a", 1000)],
                &[t, t, t, t, f],
            ),
            (
                "a fraction of a token earned is kept",
                (2, 10),
                (100, 1),
                10,
                &[("a", 0), ("a", 0), ("a", 15), ("a", 20), ("a", 20)],
                &[t, t, t, t, f],
            ),
            (
                "one key's flood leaves another key its own",
                (2, 10),
                (100, 1),
                10,
                &[("a", 0), ("a", 0), ("a", 0), ("a", 0), ("b", 0), ("b", 0), ("b", 0)],
                &[t, t, f, f, t, t, f],
            ),
            (
                "the global bound holds across keys",
                (5, 10),
                (3, 10),
                10,
                &[("a", 0), ("b", 0), ("c", 0), ("d", 0), ("d", 10)],
                &[t, t, t, f, t],
            ),
            (
                "a refused call costs the global bucket nothing",
                (1, 100),
                (2, 100),
                10,
                &[("a", 0), ("a", 0), ("a", 0), ("b", 0), ("c", 0)],
                &[t, f, f, t, f],
            ),
            (
                "a new key beyond max_keys is refused while the others' buckets are not full",
                (1, 10),
                (100, 1),
                2,
                &[("a", 0), ("b", 0), ("c", 0), ("c", 5)],
                &[t, t, f, f],
            ),
            (
                "full buckets are forgotten to make room",
                (1, 10),
                (100, 1),
                2,
                &[("a", 0), ("b", 0), ("c", 10), ("d", 10)],
                &[t, t, t, t],
            ),
        ];
        for (name, per_key, global, max_keys, calls, want) in cases {
            assert_eq!(run(*per_key, *global, *max_keys, calls), *want, "{name}");
        }
    }
}
