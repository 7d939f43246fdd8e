//! A tiny deterministic random generator for property tests (xorshift64*), so that tests
//! need no extra dependency and every failure replays from its seed.

/// xorshift64* random numbers.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator seeded with `seed` (any value; 0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// A point at `time`.
pub fn point(time: f64, value: crate::Value) -> crate::Point {
    crate::Point { time, value }
}

/// Summarises `points` into the buckets of `edges` and renders `figures` (empty = the
/// default figure), through the world's functions as the host calls them.
pub fn rendered<T: crate::KeyType>(
    options: &str,
    edges: &[f64],
    carried: Option<crate::Point>,
    points: &[crate::Point],
    figures: &[&str],
) -> Result<crate::Json, crate::Refusal> {
    use crate::world::json as world;
    let summaries =
        world::summarize::<T>(options.to_owned(), edges.to_vec(), carried, points.to_vec());
    let figures = figures.iter().map(|f| (*f).to_owned()).collect();
    let text = world::render::<T>(options.to_owned(), summaries, figures)?;
    Ok(serde_json::from_str(&text).expect("render returns JSON"))
}
