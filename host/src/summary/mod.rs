//! The summarising engine: folds a key's stored points and tier summaries through its
//! plugin into per-bucket summaries, over one snapshot view of the store.
//!
//! Below [`crate::db`] (compaction builds tiers with it) and [`crate::query`] (every
//! summary and `fetch` with a step is answered by it); it reads the store and calls plugins,
//! and knows neither keys' state nor requests.

pub mod summarize;
pub mod tiers;
