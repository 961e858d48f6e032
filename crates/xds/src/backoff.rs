//! Exponential backoff with jitter, for reconnecting.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// Delays between attempts: doubling from `initial` up to `max`, each with
/// up to 50% random jitter so that a fleet of proxies does not reconnect in
/// lockstep after a control-plane restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, next: initial }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let mut byte = [0u8; 1];
        let fraction = match SystemRandom::new().fill(&mut byte) {
            Ok(()) => f64::from(byte[0]) / 255.0,
            Err(_) => 0.5,
        };
        base.mul_f64(0.5 + 0.5 * fraction).min(self.max)
    }

    /// Back to `initial` (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert!(b.next_delay() >= Duration::from_millis(500), "at the cap, jitter halves at most");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
