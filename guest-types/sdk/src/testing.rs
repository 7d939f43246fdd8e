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

/// Runs the conformance vector file `file` of `guest-types/conformance/` (read from
/// `directory`) through key type `T`'s world functions, as the host calls them: each case's
/// `summarize` with the options `options(case)` returns (JSON text), `render` of the
/// buckets, `merge` and `render` of the merge, and `render` of the file's own encodings.
/// Returns how many cases ran; a mismatch is an `Err` naming the case.
pub fn run_vectors<T: crate::KeyType>(
    directory: &std::path::Path,
    file: &str,
    options: impl Fn(&crate::Json) -> String,
) -> Result<usize, String> {
    use crate::Json;
    use crate::world::json as world;
    let text = std::fs::read_to_string(directory.join(file)).map_err(|e| format!("{file}: {e}"))?;
    let vectors: Json = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let names: Vec<String> = vectors["figures"]
        .as_array()
        .ok_or("figures")?
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let value = |json: &Json| match json {
        Json::Number(n) => n.as_f64().map(crate::Value::Number),
        Json::String(s) => Some(crate::Value::Text(s.clone())),
        Json::Bool(b) => Some(crate::Value::Boolean(*b)),
        _ => None,
    };
    let point = |json: &Json| -> Option<crate::Point> {
        Some(crate::Point {
            time: json.get(0)?.as_f64()?,
            value: value(json.get(1)?)?,
        })
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let cases = vectors["cases"].as_array().ok_or("cases")?;
    for case in cases {
        let name = format!("{file}: {}", case["name"].as_str().unwrap_or("?"));
        let bad = |what: &str| format!("{name}: {what}");
        let edges: Vec<f64> = case["edges"]
            .as_array()
            .ok_or_else(|| bad("edges"))?
            .iter()
            .filter_map(Json::as_f64)
            .collect();
        let carried = match &case["carried"] {
            Json::Null => None,
            json => Some(point(json).ok_or_else(|| bad("carried"))?),
        };
        let points: Vec<crate::Point> = case["points"]
            .as_array()
            .ok_or_else(|| bad("points"))?
            .iter()
            .map(|p| point(p).ok_or_else(|| bad("a point")))
            .collect::<Result<_, _>>()?;
        let options = options(case);
        let render = |summaries: Vec<Vec<u8>>| -> Result<Json, String> {
            let text = world::render::<T>(options.clone(), summaries, names.clone())
                .map_err(|r| bad(&format!("render refused: {r:?}")))?;
            serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))
        };
        let summaries = world::summarize::<T>(options.clone(), edges, carried, points);
        let want = case["buckets"].as_array().ok_or_else(|| bad("buckets"))?;
        let encoded: Vec<Json> = summaries.iter().map(|s| Json::from(hex(s))).collect();
        let want_encoded: Vec<Json> = want.iter().map(|b| b["encoded"].clone()).collect();
        let want_figures = Json::Array(want.iter().map(|b| b["figures"].clone()).collect());
        let check = |what: &str, got: &Json, want: &Json| {
            if got == want {
                Ok(())
            } else {
                Err(bad(&format!("{what}: got {got}, want {want}")))
            }
        };
        check(
            "encodings",
            &Json::Array(encoded),
            &Json::Array(want_encoded),
        )?;
        check("figures", &render(summaries.clone())?, &want_figures)?;
        let merged = world::merge::<T>(options.clone(), summaries);
        check(
            "merged",
            &Json::from(hex(&merged)),
            &case["merged"]["encoded"],
        )?;
        let merged_figures = Json::Array(vec![case["merged"]["figures"].clone()]);
        check("merged figures", &render(vec![merged])?, &merged_figures)?;
        let given: Vec<Vec<u8>> = want
            .iter()
            .filter_map(|b| b["encoded"].as_str())
            .map(|h| {
                (0..h.len())
                    .step_by(2)
                    .filter_map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                    .collect()
            })
            .collect();
        check("decoded", &render(given)?, &want_figures)?;
    }
    Ok(cases.len())
}
