//! Jittered exponential backoff for reconnecting, driven by a seed instead of a random source.

/// Reconnect delays: `base * 2^attempt`, capped at `max`, with "equal jitter" (half fixed, half
/// drawn from a seeded generator) so many clients do not reconnect in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff starting at `base_ms`, never exceeding `max_ms`, with jitter drawn from `seed`.
    pub fn new(base_ms: u64, max_ms: u64, seed: u64) -> Self {
        Backoff {
            base_ms: base_ms.max(1),
            max_ms: max_ms.max(base_ms),
            attempt: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The delay before the next attempt; each call doubles the ceiling.
    pub fn next_delay(&mut self) -> u64 {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << self.attempt.min(32))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + self.rng.next_u64() % (ceiling - half + 1)
    }

    /// Starts over after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A tiny deterministic generator (SplitMix64); good enough for jitter and simulations.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        let mut b = Backoff::new(100, 5_000, 7);
        let delays: Vec<u64> = (0..10).map(|_| b.next_delay()).collect();
        assert!((50..=100).contains(&delays[0]));
        assert!((100..=200).contains(&delays[1]));
        assert!(delays.iter().all(|d| *d <= 5_000));
        assert!(delays[9] >= 2_500);
        b.reset();
        assert!(b.next_delay() <= 100);
        let mut other = Backoff::new(100, 5_000, 8);
        let other_delays: Vec<u64> = (0..10).map(|_| other.next_delay()).collect();
        assert_ne!(delays, other_delays);
    }
}
