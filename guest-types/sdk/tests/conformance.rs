//! The conformance vectors of `guest-types/conformance/`, which the AssemblyScript SDK's
//! suite runs too (those of the kinds it implements): the same inputs must give the same
//! encoded summaries, the same merge and the same figures in every SDK.
//!
//! One test per vector file, and one that fails when the directory holds a file no test
//! here runs, so a new file cannot be skipped by accident.

use komoku_guest::serde_json::{self, Value as JsonValue};
use komoku_guest::summary::{
    Bucket, Figures, LogSummary, NumberSummary, StateSummary, Summary, buckets,
};
use komoku_guest::{Json, Point, Value};
use std::fmt::Debug;
use std::path::{Path, PathBuf};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The vector files and the summary kind each holds; every `*.json` of the directory must
/// be here.
const FILES: &[(&str, &str)] = &[
    ("number.json", "number"),
    ("boolean.json", "boolean"),
    ("text-state.json", "text-state"),
    ("log.json", "log"),
];

fn directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance")
}

fn vectors(file: &str) -> Result<Json, Box<dyn std::error::Error>> {
    let path = directory().join(file);
    Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
}

fn value(json: &Json) -> Result<Value, String> {
    Ok(match json {
        JsonValue::Number(n) => Value::Number(n.as_f64().ok_or("not an f64")?),
        JsonValue::String(s) => Value::Text(s.clone()),
        JsonValue::Bool(b) => Value::Boolean(*b),
        other => return Err(format!("not a value: {other}")),
    })
}

/// `[time, value]`.
fn point(json: &Json) -> Result<Point, String> {
    let pair = json.as_array().ok_or("a point is [time, value]")?;
    Ok(Point {
        time: pair[0].as_f64().ok_or("time")?,
        value: value(&pair[1])?,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, std::num::ParseIntError> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
        .collect()
}

/// Every figure named in `names`, as the object `render` gives (through the SDK's
/// [`Figures`], so numbers are rendered as `render` renders them).
fn figures<S: Summary<()>>(summary: &S, names: &[Json]) -> Result<Json, String> {
    let wanted: Vec<String> = names
        .iter()
        .map(|n| n.as_str().map(str::to_owned).ok_or("a figure name"))
        .collect::<Result<_, _>>()?;
    let mut out = Figures::pick(&wanted);
    summary.figures(&(), &mut out);
    let mut object = serde_json::Map::new();
    for (name, figure) in wanted.iter().zip(out.into_values()) {
        object.insert(name.clone(), figure.ok_or(format!("no figure {name}"))?);
    }
    Ok(Json::Object(object))
}

/// Runs every case of `file`, whose summaries `summarize` makes from a bucket and the case's
/// `options` (an object, `{}` when absent). Returns how many cases ran.
fn run<S>(
    file: &str,
    kind: &str,
    summarize: impl Fn(&Bucket<'_>, &Json) -> S,
) -> Result<usize, Box<dyn std::error::Error>>
where
    S: Summary<()> + PartialEq + Debug,
{
    let vectors = vectors(file)?;
    assert_eq!(vectors["summary"], kind, "{file}: summary kind");
    let names = vectors["figures"].as_array().ok_or("figures")?;
    let cases = vectors["cases"].as_array().ok_or("cases")?;
    assert!(!cases.is_empty(), "{file}: no cases");
    let no_options = Json::Object(serde_json::Map::new());
    for case in cases {
        let name = case["name"].as_str().ok_or("name")?;
        let name = format!("{file}: {name}");
        assert!(case["why"].is_string(), "{name}: no why");
        let options = case.get("options").unwrap_or(&no_options);
        let edges: Vec<f64> = case["edges"]
            .as_array()
            .ok_or("edges")?
            .iter()
            .map(|e| e.as_f64().ok_or("edge"))
            .collect::<Result<_, _>>()?;
        let carried = match &case["carried"] {
            JsonValue::Null => None,
            json => Some(point(json)?),
        };
        let points: Vec<Point> = case["points"]
            .as_array()
            .ok_or("points")?
            .iter()
            .map(point)
            .collect::<Result<_, _>>()?;
        let expected = case["buckets"].as_array().ok_or("buckets")?;
        let summaries: Vec<S> = buckets(&edges, carried.as_ref(), &points)
            .iter()
            .map(|b| summarize(b, options))
            .collect();
        assert_eq!(summaries.len(), expected.len(), "{name}: bucket count");
        for (i, (summary, want)) in summaries.iter().zip(expected).enumerate() {
            let encoded = want["encoded"].as_str().ok_or("encoded")?;
            assert_eq!(
                hex(&summary.encode()),
                encoded,
                "{name}: bucket {i} encoding"
            );
            assert_eq!(
                figures(summary, names)?,
                want["figures"],
                "{name}: bucket {i} figures"
            );
            let decoded = S::decode(&unhex(encoded)?)?;
            assert_eq!(&decoded, summary, "{name}: bucket {i} decodes");
        }
        let merged = summaries
            .into_iter()
            .reduce(|a, b| a.merge(b, &()))
            .unwrap_or_else(S::empty);
        assert_eq!(
            hex(&merged.encode()),
            case["merged"]["encoded"].as_str().ok_or("merged")?,
            "{name}: merged encoding"
        );
        assert_eq!(
            figures(&merged, names)?,
            case["merged"]["figures"],
            "{name}: merged figures"
        );
    }
    println!("{file}: {} cases of kind {kind} ran", cases.len());
    Ok(cases.len())
}

/// The case's `sample` option (0 when absent).
fn sample(options: &Json) -> u32 {
    options["sample"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

#[test]
fn number_summaries_match_the_conformance_vectors() -> TestResult {
    run("number.json", "number", |b, _| {
        NumberSummary::from_bucket(b)
    })?;
    Ok(())
}

#[test]
fn boolean_state_summaries_match_the_conformance_vectors() -> TestResult {
    run("boolean.json", "boolean", |b, _| {
        StateSummary::<bool>::from_bucket(b)
    })?;
    Ok(())
}

#[test]
fn text_state_summaries_match_the_conformance_vectors() -> TestResult {
    run("text-state.json", "text-state", |b, _| {
        StateSummary::<String>::from_bucket(b)
    })?;
    Ok(())
}

#[test]
fn log_summaries_match_the_conformance_vectors() -> TestResult {
    run("log.json", "log", |b, options| {
        LogSummary::sampled(b, sample(options))
    })?;
    Ok(())
}

#[test]
fn every_vector_file_has_a_test_here() -> TestResult {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(directory())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            found.push(name);
        }
    }
    found.sort();
    let mut listed: Vec<String> = FILES.iter().map(|(f, _)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "vector files in the directory vs the files run here"
    );
    for (file, kind) in FILES {
        assert_eq!(vectors(file)?["summary"], *kind, "{file}");
    }
    Ok(())
}

#[test]
fn the_vectors_hold_the_max_case_of_issue_16() -> TestResult {
    let vectors = vectors("number.json")?;
    let case = &vectors["cases"][0];
    assert_eq!(case["carried"], serde_json::json!([-5, 90]));
    assert_eq!(case["points"], serde_json::json!([[0, 10]]));
    assert_eq!(case["buckets"][0]["figures"]["max"], serde_json::json!(10));
    Ok(())
}
