//! Compaction and retention, end to end: compacted history answers every figure exactly at
//! its tier's step, and a compaction killed at any instant loses and doubles nothing.
//!
//! Each compacted key has an uncompacted twin (a policy keeping raw points forever) fed the
//! same points; answers over old periods must be equal figure by figure (floats within a
//! relative 1e-9: a mean merged from 24 hours adds in another order than one from raw).

use anyhow::{Result, ensure};
use komoku_tests::{Client, ServerProcess, TestServer, now};
use serde_json::{Value as Json, json};

const BIN: &str = env!("CARGO_BIN_EXE_komoku-e2e");
const DAY: f64 = 86_400.0;

/// A deterministic pseudo-random sequence (an LCG), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The value of the `k`th point of a key of `kind`.
fn value(kind: &str, k: u64, rng: &mut Rng, counter: &mut u64) -> Json {
    match kind {
        "n" => json!(rng.next(100) as i64 - 20),
        "c" => {
            *counter += rng.next(5);
            json!(*counter)
        }
        "b" => json!(rng.next(3) == 0),
        "s" => json!(["home", "away", "sleep"][rng.next(3) as usize]),
        _ => json!(format!("event {}", k % 7)),
    }
}

const KINDS: [&str; 5] = ["n", "c", "b", "s", "l"];

/// Defines `<kind>.c` (compacted) and `<kind>.raw` (kept raw) for every kind.
async fn define_twins(c: &mut Client) -> Result<()> {
    for suffix in ["c", "raw"] {
        let defs = json!({
            format!("n.{suffix}"): {"type": "numeric"},
            format!("c.{suffix}"): {"type": "counter"},
            format!("b.{suffix}"): {"type": "boolean"},
            format!("s.{suffix}"): {"type": "string"},
            format!("l.{suffix}"): {"type": "string", "mode": "log", "sample": 5},
        });
        ensure!(c.request(json!({ "define": defs })).await? == json!("ack"));
    }
    let r = c
        .request(json!({"retention": {"key": "*.c", "raw": "1d",
                                      "tiers": [["1H", "30d"], ["1d", null]]}}))
        .await?;
    ensure!(r == json!("ack"), "{r}");
    let r = c
        .request(json!({"retention": {"key": "*.raw", "raw": null}}))
        .await?;
    ensure!(r == json!("ack"), "{r}");
    Ok(())
}

/// The same points of `kind` for both twins, from `from` until `end`, `gap(rng)` apart;
/// `seed` varies the sequence.
fn twin_puts(
    kind: &str,
    from: f64,
    end: f64,
    seed: u64,
    gap: impl Fn(&mut Rng) -> f64,
) -> Vec<Json> {
    let mut rng = Rng(kind.as_bytes()[0] as u64 + seed);
    let (mut puts, mut counter, mut k, mut t) = (Vec::new(), 0, 0u64, from);
    while t < end {
        let v = value(kind, k, &mut rng, &mut counter);
        for suffix in ["c", "raw"] {
            puts.push(json!({"put": {"key": format!("{kind}.{suffix}"), "value": v, "time": t}}));
        }
        k += 1;
        t += gap(&mut rng);
    }
    puts
}

/// Puts every point of `puts` in frames of 1 000 requests.
async fn put_all(c: &mut Client, puts: Vec<Json>) -> Result<()> {
    for frame in puts.chunks(1000) {
        let replies = c.request(Json::Array(frame.to_vec())).await?;
        let replies = replies.as_array().cloned().unwrap_or_default();
        ensure!(replies.len() == frame.len());
        for r in replies {
            ensure!(r == json!("ack"), "put refused: {r}");
        }
    }
    Ok(())
}

/// Equal JSON, numbers within a relative 1e-9.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

/// Every query of `cases` asked of `<kind>.c` has the given resolution and the same
/// buckets, total and groups as asked of the raw twin `<kind>.raw`.
async fn answers_like_twin(c: &mut Client, kind: &str, cases: &[(Json, &str)]) -> Result<()> {
    for (args, resolution) in cases {
        let compacted = query(c, &format!("{kind}.c"), args.clone()).await?;
        let raw = query(c, &format!("{kind}.raw"), args.clone()).await?;
        assert_eq!(compacted["resolution"], json!(resolution), "{kind} {args}");
        assert_eq!(raw["resolution"], json!("raw"));
        for part in ["total", "buckets", "groups"] {
            assert!(
                same(&compacted[part], &raw[part]),
                "{kind} {args} {part}:\ncompacted {}\nraw       {}",
                compacted[part],
                raw[part]
            );
        }
    }
    Ok(())
}

async fn query(c: &mut Client, key: &str, mut args: Json) -> Result<Json> {
    args["key"] = json!(key);
    c.request(json!({ "query": args })).await
}

#[tokio::test]
async fn compacted_history_answers_every_figure_like_raw_at_its_tier_step() -> Result<()> {
    let s = TestServer::start_with(|cfg| {
        cfg.durability = komoku::config::DurabilityConfig::IntervalMs(50);
    })
    .await?;
    let mut c = s.client().await?;
    define_twins(&mut c).await?;

    // Two simulated years up to now, a point every 20 minutes (with jitter and a few
    // silent days), the same points to both twins.
    let start = ((now() - 730.0 * DAY) / DAY).floor() * DAY;
    let end = now() - 600.0;
    for kind in KINDS {
        let puts = twin_puts(kind, start + 333.0, end, 0, |rng| {
            1200.0 + rng.next(300) as f64 + if rng.next(500) == 0 { 2.0 * DAY } else { 0.0 }
        });
        put_all(&mut c, puts).await?;
    }

    let report = c.request(json!({"compact": {}})).await?;
    ensure!(num(&report["points_compacted"]) > 100_000.0, "{report}");
    // A second run finds nothing due.
    let again = c.request(json!({"compact": {}})).await?;
    assert_eq!(again["steps"], json!(0), "{again}");
    let stats = c.request(json!({"stats": {}})).await?;
    ensure!(
        num(&stats["compaction"]["summaries_written"]) > 0.0,
        "{stats}"
    );
    // Tier sizes: the five compacted keys have an hour tier of 30 days (less the raw day)
    // and a day tier of the rest (the raw twins have no tiers).
    let tiers = &stats["compaction"]["tiers"];
    assert_eq!(tiers[0]["step"], json!("1H"), "{tiers}");
    assert_eq!(tiers[1]["step"], json!("1d"), "{tiers}");
    for (tier, about) in [(&tiers[0], 5.0 * 29.0 * 24.0), (&tiers[1], 5.0 * 700.0)] {
        assert_eq!(tier["keys"], json!(5), "{tiers}");
        let buckets = num(&tier["buckets"]);
        ensure!((buckets - about).abs() < 0.05 * about, "{tiers}");
    }

    let day0 = ((now() - 400.0 * DAY) / DAY).floor() * DAY;
    let hour0 = ((now() - 10.0 * DAY) / 3600.0).floor() * 3600.0;
    let cases = [
        // The 1-day tier: 120 days by day, and a whole year in one bucket.
        (
            json!({"since": day0, "until": day0 + 120.0 * DAY, "step": "1d"}),
            "1d",
        ),
        (json!({"since": start, "until": day0}), "1d"),
        // The 1-hour tier: 3 days by hour, and by 6 hours.
        (
            json!({"since": hour0, "until": hour0 + 3.0 * DAY, "step": "1H"}),
            "1H",
        ),
        (
            json!({"since": hour0, "until": hour0 + 3.0 * DAY, "step": "6H"}),
            "1H",
        ),
        // A typical weekday from the 1-day tier, a typical hour from the 1-hour tier.
        (
            json!({"since": day0, "until": day0 + 28.0 * DAY, "step": "1d", "group": "weekday"}),
            "1d",
        ),
        (
            json!({"since": hour0, "until": hour0 + 3.0 * DAY, "step": "1H", "group": "hour"}),
            "1H",
        ),
        // Across the 1-day tier, the 1-hour tier and raw points, by day.
        (
            json!({"since": ((now() - 40.0 * DAY) / DAY).floor() * DAY,
                "until": (now() / DAY).floor() * DAY, "step": "1d"}),
            "1d",
        ),
    ];
    for kind in KINDS {
        answers_like_twin(&mut c, kind, &cases).await?;
        // The whole history by default (since = the first point's bucket).
        let all = json!({"until": day0, "figures": ["coverage_seconds"]});
        let compacted = query(&mut c, &format!("{kind}.c"), all.clone()).await?;
        ensure!(num(&compacted["since"]) == start, "{compacted}");
        // The v1 stepped fetch reads tiers too.
        let fetch = json!({"since": day0, "until": day0 + 10.0 * DAY, "step": 86_400});
        let a = c
            .request(json!({"fetch": {"key": format!("{kind}.c"), "opts": fetch}}))
            .await?;
        let b = c
            .request(json!({"fetch": {"key": format!("{kind}.raw"), "opts": fetch}}))
            .await?;
        assert!(same(&a, &b), "{kind} fetch:\n{a}\n{b}");
    }

    // The log's sample outlives its points: 5 entries of a year, picked as from raw.
    let log = query(&mut c, "l.c", json!({"since": start, "until": day0})).await?;
    assert_eq!(log["resolution"], json!("1d"), "{log}");
    assert_eq!(
        log["total"]["sample"].as_array().map(Vec::len),
        Some(5),
        "{log}"
    );

    // A put into compacted history is refused, not lost silently; the raw period takes it.
    let late = c
        .request(json!({"put": {"key": "n.c", "value": 1, "time": day0}}))
        .await?;
    assert_eq!(late, json!({"error": "compacted"}));
    let recent = c
        .request(json!({"put": {"key": "n.c", "value": 1, "time": now() - 3600.0}}))
        .await?;
    assert_eq!(recent, json!("ack"));

    // Points themselves are gone from compacted history: `at`, `last` and `spans` reaching
    // into it say so rather than answer from the one point left; elsewhere they answer
    // like the raw twin.
    for (kind, args) in [
        ("n", json!({"at": day0 + 100.0})),
        ("s", json!({"last": 1000})),
        (
            "b",
            json!({"spans": true, "since": day0, "until": day0 + DAY}),
        ),
    ] {
        let a = query(&mut c, &format!("{kind}.c"), args.clone()).await?;
        assert_eq!(a, json!({"error": "compacted"}), "{kind} {args}");
    }
    let t0 = (now() / 600.0).floor() * 600.0;
    for k in 1..=5 {
        for key in ["s.c", "s.raw"] {
            let t = t0 - 600.0 * k as f64;
            let r = c
                .request(json!({"put": {"key": key, "value": "home", "time": t}}))
                .await?;
            ensure!(r == json!("ack"), "{r}");
        }
    }
    for (kind, args) in [
        ("n", json!({"at": now() - 7200.0})),
        ("n", json!({"at": start - 10.0 * DAY})),
        ("s", json!({"last": 5})),
        ("b", json!({"spans": true, "since": now() - 5.0 * 3600.0})),
    ] {
        let a = query(&mut c, &format!("{kind}.c"), args.clone()).await?;
        let b = query(&mut c, &format!("{kind}.raw"), args.clone()).await?;
        assert_eq!(a, b, "{kind} {args}");
        ensure!(a.get("error").is_none(), "{kind} {args}: {a}");
    }
    Ok(())
}

#[tokio::test]
async fn policies_are_listed_removed_and_checked() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let r = c
        .request(json!({"retention": {"key": "sensor.*", "raw": "2d", "tiers": [["1H", null]]}}))
        .await?;
    assert_eq!(r, json!("ack"));
    let listed = c.request(json!({"retention": {}})).await?;
    assert_eq!(
        listed["policies"],
        json!({"sensor.*": {"raw": "2d", "tiers": [["1H", null]]}})
    );
    assert_eq!(listed["default"]["raw"], json!("7d"));
    let bad = c
        .request(
            json!({"retention": {"key": "x", "raw": "1d", "tiers": [["1H", "1d"], ["90M", null]]}}),
        )
        .await?;
    assert_eq!(bad, json!({"error": "invalid_query"}));
    let r = c
        .request(json!({"retention": {"key": "sensor.*", "remove": true}}))
        .await?;
    assert_eq!(r, json!("ack"));
    assert_eq!(
        c.request(json!({"retention": {}})).await?["policies"],
        json!({})
    );
    Ok(())
}

fn num(v: &Json) -> f64 {
    komoku_tests::num(v)
}

/// The total `count` and `integral` of `key` over `[since, until)`.
async fn totals(c: &mut Client, key: &str, since: f64, until: f64) -> Result<(f64, f64)> {
    let a = query(
        c,
        key,
        json!({"since": since, "until": until, "figures": ["count", "integral"]}),
    )
    .await?;
    Ok((num(&a["total"]["count"]), num(&a["total"]["integral"])))
}

#[tokio::test]
async fn compaction_killed_at_random_moments_loses_and_doubles_nothing() -> Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = ServerProcess::start(BIN, data.path())?;
    let mut c = Client::connect(&server.url()).await?;
    let r = c
        .request(json!({"retention": {"key": "k*", "raw": "1d",
                                      "tiers": [["1H", "30d"], ["1d", null]]}}))
        .await?;
    ensure!(r == json!("ack"), "{r}");

    // 300 days at 30 minutes per key, integer values and times: every total is exact.
    // Key k0 measures how long a compaction takes; each round then kills the compaction of
    // one more key at a random moment within that time.
    const KEYS: usize = 13;
    let start = ((now() - 300.0 * DAY) / DAY).floor() * DAY;
    let until = (now() / 3600.0).floor() * 3600.0 - 3600.0;
    let mut rng = Rng(7);
    let mut points = Vec::new();
    let mut t = start;
    while t < until - 1800.0 {
        points.push((t, rng.next(100) as f64));
        t += 1800.0;
    }
    for k in 0..KEYS {
        let puts: Vec<Json> = points
            .iter()
            .map(|(t, v)| json!({"put": {"key": format!("k{k}"), "value": v, "time": t}}))
            .collect();
        put_all(&mut c, puts).await?;
    }
    let count = points.len() as f64;
    let integral: f64 = points
        .iter()
        .enumerate()
        .map(|(i, (t, v))| v * (points.get(i + 1).map_or(until, |p| p.0) - t))
        .sum();
    assert_eq!(totals(&mut c, "k0", start, until).await?, (count, integral));

    let began = std::time::Instant::now();
    let report = c.request(json!({"compact": {"key": "k0"}})).await?;
    let whole = began.elapsed().as_millis() as u64;
    // Steps follow the rows: the 14 400 points in one raw step, then the hours into days
    // 2 000 at a time (4 steps).
    ensure!(num(&report["steps"]) >= 5.0, "{report}");

    let mut kills = 0;
    for k in 1..KEYS {
        let url = server.url();
        let run = tokio::spawn(async move {
            let mut c = Client::connect(&url).await?;
            c.request(json!({"compact": {"key": format!("k{k}")}}))
                .await
        });
        let wait = rng.next(whole.max(1));
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        if !run.is_finished() {
            kills += 1;
        }
        server.kill9()?;
        server = ServerProcess::start(BIN, data.path())?;
        let mut c = Client::connect(&server.url()).await?;
        for key in 0..KEYS {
            assert_eq!(
                totals(&mut c, &format!("k{key}"), start, until).await?,
                (count, integral),
                "key k{key} after killing k{k}'s compaction after {wait} of {whole} ms"
            );
        }
        // Compaction resumes where it stopped, and ends with the same totals.
        c.request(json!({"compact": {"key": format!("k{k}")}}))
            .await?;
        assert_eq!(
            totals(&mut c, &format!("k{k}"), start, until).await?,
            (count, integral)
        );
    }
    println!(
        "{kills} of {} kills landed during a compaction of {whole} ms",
        KEYS - 1
    );
    // Kills after a compaction ended still check a restart; the test only stops meaning
    // anything if (almost) none landed during one.
    ensure!(
        kills >= 2,
        "only {kills} of {} kills landed during a compaction",
        KEYS - 1
    );
    let mut c = Client::connect(&server.url()).await?;
    let a = query(
        &mut c,
        "k3",
        json!({"since": start, "until": start + 10.0 * DAY}),
    )
    .await?;
    assert_eq!(a["resolution"], json!("1d"), "{a}");
    Ok(())
}

#[tokio::test]
async fn skipped_repeats_still_count_as_coverage_after_compaction() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    for key in ["d.c", "d.raw"] {
        let def = json!({"define": {key: {"type": "boolean", "same_value_resolution": 86_400}}});
        ensure!(c.request(def).await? == json!("ack"));
    }
    c.request(json!({"retention": {"key": "*.c", "raw": "1d", "tiers": [["1H", null]]}}))
        .await?;
    c.request(json!({"retention": {"key": "*.raw", "raw": null}}))
        .await?;
    let t0 = ((now() - 10.0 * DAY) / 3600.0).floor() * 3600.0;
    // The repeats (at +600, +6000) are acknowledged but not stored.
    for (dt, v) in [
        (0.0, true),
        (600.0, true),
        (5400.0, false),
        (6000.0, false),
        (9000.0, true),
    ] {
        for key in ["d.c", "d.raw"] {
            let r = c
                .request(json!({"put": {"key": key, "value": v, "time": t0 + dt}}))
                .await?;
            ensure!(r == json!("ack"), "{r}");
        }
    }
    c.request(json!({"compact": {}})).await?;
    let args = json!({"since": t0, "until": t0 + 3.0 * 3600.0, "step": "1H"});
    let compacted = query(&mut c, "d.c", args.clone()).await?;
    let raw = query(&mut c, "d.raw", args).await?;
    assert_eq!(compacted["resolution"], json!("1H"));
    assert!(
        same(&compacted["buckets"], &raw["buckets"]),
        "{compacted}\n{raw}"
    );
    for b in compacted["buckets"].as_array().into_iter().flatten() {
        assert_eq!(b["coverage"], json!(1), "{b}");
    }
    assert_eq!(
        compacted["total"]["time_true"],
        json!(5400 + 1800),
        "{compacted}"
    );
    Ok(())
}

#[tokio::test]
async fn a_change_of_tier_steps_rebuilds_the_tiers_and_they_still_answer_like_raw() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // Raw 1 day → 1 hour for 30 days → 1 day forever; raw a day and an hour when a day
    // would put the raw watermark on a 6-hour edge (see below).
    define_twins(&mut c).await?;
    let raw_hours = 24.0 + f64::from(((now() / 3600.0).floor() - 24.0) % 6.0 == 0.0);
    let r = c
        .request(
            json!({"retention": {"key": "*.c", "raw": format!("{raw_hours}H"),
                        "tiers": [["1H", "30d"], ["1d", null]]}}),
        )
        .await?;
    ensure!(r == json!("ack"), "{r}");

    // 120 days up to now, a point every 20 minutes or so.
    let start = ((now() - 120.0 * DAY) / DAY).floor() * DAY;
    let end = now() - 60.0;
    for kind in KINDS {
        let puts = twin_puts(kind, start + 77.0, end, 1, |rng| {
            1100.0 + rng.next(200) as f64
        });
        put_all(&mut c, puts).await?;
    }
    let first = c.request(json!({"compact": {}})).await?;
    ensure!(num(&first["summaries_written"]) > 0.0, "{first}");

    // Hours become 6 hours, days stay days; the new minute tier fills from raw points (kept
    // for 2 hours now). The raw watermark was on an hour inside a 6-hour bucket: the 6-hour
    // tier then holds part of that bucket, and the minutes, as they age, merge into it.
    let changed = json!({"retention": {"key": "*.c", "raw": "2H",
                         "tiers": [["1M", "4H"], ["6H", "60d"], ["1d", null]]}});
    ensure!(c.request(changed).await? == json!("ack"));
    let second = c.request(json!({"compact": {}})).await?;
    ensure!(num(&second["points_compacted"]) > 0.0, "{second}");
    let again = c.request(json!({"compact": {}})).await?;
    assert_eq!(again["steps"], json!(0), "{again}");
    let stats = c.request(json!({"stats": {}})).await?;
    assert_eq!(stats["compaction"]["skipped_keys"], json!(0), "{stats}");

    let six = 6.0 * 3600.0;
    let hour = |t: f64| (t / 3600.0).floor() * 3600.0;
    let cases = [
        (
            json!({"since": start, "until": start + 50.0 * DAY, "step": "1d"}),
            "1d",
        ),
        // Old hours, merged into 6-hour buckets.
        (
            json!({"since": hour(now() - 25.0 * DAY), "until": hour(now() - 10.0 * DAY),
                   "step": "6H"}),
            "6H",
        ),
        // Across the 6-hour tier and the minute tier (which fed the 6-hour bucket it
        // started inside), by 6 hours.
        (
            json!({"since": ((now() - 3.0 * DAY) / six).floor() * six,
                   "until": ((now() - 3600.0) / six).floor() * six, "step": "6H"}),
            "6H",
        ),
        // The minute tier, rebuilt from raw points.
        (
            json!({"since": hour(now() - 4.0 * 3600.0) + 3600.0,
                   "until": hour(now() - 2.0 * 3600.0), "step": "1H"}),
            "1M",
        ),
        (
            json!({"since": start, "until": hour(now() - 3.0 * 3600.0)}),
            "1d",
        ),
    ];
    for kind in KINDS {
        answers_like_twin(&mut c, kind, &cases).await?;
    }

    // Steps that cannot hold the 6-hour summaries (7 minutes divides no 6 hours) are
    // refused, not left to stall the keys' compaction.
    let unfit = c
        .request(json!({"retention": {"key": "*.c", "raw": "2H",
                        "tiers": [["1M", "4H"], ["7M", null]]}}))
        .await?;
    assert_eq!(unfit, json!({"error": "invalid_query"}));
    let listed = c.request(json!({"retention": {}})).await?;
    assert_eq!(listed["policies"]["*.c"]["raw"], json!("2H"), "{listed}");
    Ok(())
}

/// A key's summary and gap rows, as `stats` counts them.
async fn rows(c: &mut Client) -> Result<(f64, f64)> {
    let stats = c.request(json!({"stats": {}})).await?;
    Ok((
        num(&stats["compaction"]["summaries"]),
        num(&stats["compaction"]["gaps"]),
    ))
}

#[tokio::test]
async fn compaction_work_follows_the_points_not_the_time_they_span() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    // Twins under the types' default policies (numeric: raw 7d → 1M 30d → 1H 2y → 1d
    // forever; boolean: raw 90d → 1H 2y → 1d forever) and kept raw.
    let defs = json!({"n.c": {"type": "numeric"}, "n.raw": {"type": "numeric"},
                      "b.c": {"type": "boolean"}, "b.raw": {"type": "boolean"}});
    assert_eq!(c.request(json!({ "define": defs })).await?, json!("ack"));
    let r = c
        .request(json!({"retention": {"key": "*.raw", "raw": null}}))
        .await?;
    assert_eq!(r, json!("ack"));
    // Far in the past is refused outright; the epoch is accepted.
    let far = c
        .request(json!({"put": {"key": "n.c", "value": 1, "time": -1e18}}))
        .await?;
    assert_eq!(far, json!({"error": "invalid_time"}));
    let times = [0.0, now() - 100.0 * DAY, now() - 60.0];
    for (kind, values) in [
        ("n", [json!(1), json!(2), json!(3)]),
        ("b", [json!(true), json!(false), json!(true)]),
    ] {
        for suffix in ["c", "raw"] {
            let key = format!("{kind}.{suffix}");
            for (v, t) in values.iter().zip(times) {
                let r = c
                    .request(json!({"put": {"key": key, "value": v, "time": t}}))
                    .await?;
                ensure!(r == json!("ack"), "{r}");
            }
        }
    }

    // 56 years since the epoch: the run ends within the client's wait (it used to write a
    // summary per minute of them, 30 million), and it writes a few rows, not millions.
    let report = c.request(json!({"compact": {}})).await?;
    ensure!(report.get("error").is_none(), "{report}");
    let (summaries, gaps) = rows(&mut c).await?;
    println!("56 years compacted: {report}; {summaries} summaries, {gaps} gaps");
    ensure!(
        summaries <= 8.0 && gaps <= 8.0,
        "summaries {summaries}, gaps {gaps}: {report}"
    );
    let again = c.request(json!({"compact": {}})).await?;
    assert_eq!(again["steps"], json!(0), "{again}");
    // The connection that asked answers on.
    assert_eq!(c.request(json!({"ping": "x"})).await?, json!({"pong": "x"}));

    // The silences still hold their value: compacted answers equal the raw twin's.
    let day = |t: f64| (t / DAY).floor() * DAY;
    for args in [
        json!({"since": 0, "until": day(now() - 800.0 * DAY), "step": "1y"}),
        json!({"since": day(now() - 120.0 * DAY), "until": day(now() - 1.0 * DAY), "step": "1d"}),
        json!({"since": 0, "until": day(now())}),
    ] {
        for kind in ["n", "b"] {
            let a = query(&mut c, &format!("{kind}.c"), args.clone()).await?;
            let b = query(&mut c, &format!("{kind}.raw"), args.clone()).await?;
            ensure!(a.get("error").is_none(), "{a}");
            assert_ne!(a["resolution"], json!("raw"), "{kind} {args}: {a}");
            assert!(
                same(&a["total"], &b["total"]),
                "{kind} {args} total:\ncompacted {}\nraw       {}",
                a["total"],
                b["total"]
            );
            let (xs, ys) = (a["buckets"].as_array(), b["buckets"].as_array());
            assert_eq!(xs.map(Vec::len), ys.map(Vec::len), "{kind} {args}");
            for (x, y) in xs.into_iter().flatten().zip(ys.into_iter().flatten()) {
                assert!(
                    same(x, y),
                    "{kind} {args} bucket:\ncompacted {x}\nraw       {y}"
                );
            }
        }
    }
    // The first year is known throughout (the value put at the epoch held).
    let first = query(&mut c, "n.c", json!({"since": 0, "until": 365.0 * DAY})).await?;
    assert_eq!(first["total"]["coverage"], json!(1), "{first}");
    assert_eq!(first["total"]["mean"], json!(1), "{first}");
    Ok(())
}

#[tokio::test]
async fn compact_takes_only_its_documented_shapes() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    assert_eq!(
        c.request(json!({"put": {"key": "k", "value": 1}})).await?,
        json!("ack")
    );
    for bad in [
        json!(1),
        json!("x"),
        Json::Null,
        json!([]),
        json!(true),
        json!({"bogus": 1}),
    ] {
        let reply = c.request(json!({ "compact": bad })).await?;
        assert_eq!(reply, json!({"error": "invalid_query"}), "{bad}");
    }
    let reply = c.request(json!({"compact": {"key": "nosuch"}})).await?;
    assert_eq!(reply, json!({"error": "unknown_key"}));
    let stats = c.request(json!({"stats": {}})).await?;
    assert_eq!(
        stats["compaction"]["runs"],
        json!(0),
        "nothing ran: {stats}"
    );
    for good in [json!({}), json!({"key": "k"}), json!({"key": null})] {
        let reply = c.request(json!({ "compact": good })).await?;
        assert_eq!(reply["steps"], json!(0), "{good}: {reply}");
    }
    Ok(())
}

#[tokio::test]
async fn stats_count_summaries_exactly_through_merges_restarts_and_deletes() -> Result<()> {
    let s = TestServer::start().await?;
    let mut c = s.client().await?;
    let r = c
        .request(json!({"retention": {"key": "n", "raw": "1d",
                                      "tiers": [["1H", "2d"], ["1d", null]]}}))
        .await?;
    assert_eq!(r, json!("ack"));
    // Ten days at 10 minutes: hours older than two days merge into days.
    let start = ((now() - 10.0 * DAY) / DAY).floor() * DAY;
    let mut t = start;
    let mut puts = Vec::new();
    while t < now() - 600.0 {
        puts.push(json!({"put": {"key": "n", "value": (t / 600.0) % 7.0, "time": t}}));
        t += 600.0;
    }
    put_all(&mut c, puts).await?;
    let report = c.request(json!({"compact": {}})).await?;
    ensure!(num(&report["summaries_removed"]) > 0.0, "{report}");
    let stats = c.request(json!({"stats": {}})).await?;
    let counted = &stats["compaction"];
    let (summaries, gaps) = rows(&mut c).await?;
    assert_eq!(
        summaries,
        num(&counted["summaries_written"]) - num(&counted["summaries_removed"]),
        "{counted}"
    );
    println!("{summaries} summaries, {gaps} gaps after {report}");
    // About 8 days, then the hours since the last whole day older than two
    // days (24 to 48 of them, by the time of day this runs), and raw points
    // keep the last day.
    ensure!((30.0..=58.0).contains(&summaries), "{counted}");
    assert_eq!(gaps, 0.0, "points every 10 minutes leave no silence");

    // The count is stored with the data: a restart finds it.
    c.close().await?;
    let data = s.stop().await?;
    let s = TestServer::start_with(|cfg| cfg.data_dir = data.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    assert_eq!(rows(&mut c).await?, (summaries, gaps));

    // The rows on disk are the ones counted; deleting the key removes them, and the count
    // says so.
    let on_disk = |s: &TestServer| -> Result<(f64, f64)> {
        let view = s.server.db().store().view();
        let summaries = view.count_summaries("n", 3600.0)? + view.count_summaries("n", DAY)?;
        let gaps = view.gaps("n", f64::NEG_INFINITY, f64::INFINITY).count();
        Ok((summaries as f64, gaps as f64))
    };
    assert_eq!(on_disk(&s)?, (summaries, gaps));
    assert_eq!(
        c.request(json!({"delete": {"key": "n"}})).await?,
        json!("ack")
    );
    assert_eq!(rows(&mut c).await?, (0.0, 0.0));
    assert_eq!(on_disk(&s)?, (0.0, 0.0));
    c.close().await?;
    s.stop().await?;
    let s = TestServer::start_with(|cfg| cfg.data_dir = data.path().to_path_buf()).await?;
    let mut c = s.client().await?;
    assert_eq!(rows(&mut c).await?, (0.0, 0.0));
    Ok(())
}
