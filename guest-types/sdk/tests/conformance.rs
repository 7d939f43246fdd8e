//! The conformance vectors of `guest-types/conformance/`, which the AssemblyScript SDK's
//! suite runs too: the same inputs must give the same encoded summaries, the same merge and
//! the same figures in both SDKs.

use komoku_guest::serde_json::{self, Value as JsonValue};
use komoku_guest::summary::{NumberSummary, buckets};
use komoku_guest::{Json, Point, Value};
use std::path::Path;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn vectors(file: &str) -> Result<Json, Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conformance")
        .join(file);
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

/// Every figure of `summary` named in `figures`, as the object `render` gives.
fn figures(summary: &NumberSummary, figures: &[Json]) -> Result<Json, String> {
    let mut object = serde_json::Map::new();
    for name in figures {
        let name = name.as_str().ok_or("a figure name")?;
        let figure = summary.figure(name).ok_or(format!("no figure {name}"))?;
        object.insert(name.to_owned(), figure);
    }
    Ok(Json::Object(object))
}

#[test]
fn number_summaries_match_the_conformance_vectors() -> TestResult {
    let vectors = vectors("number.json")?;
    let names = vectors["figures"].as_array().ok_or("figures")?;
    let cases = vectors["cases"].as_array().ok_or("cases")?;
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().ok_or("name")?;
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
        let summaries: Vec<NumberSummary> = buckets(&edges, carried.as_ref(), &points)
            .iter()
            .map(NumberSummary::from_bucket)
            .collect();
        assert_eq!(summaries.len(), expected.len(), "{name}: bucket count");
        for (i, (summary, want)) in summaries.iter().zip(expected).enumerate() {
            assert_eq!(
                hex(&summary.encode()),
                want["encoded"].as_str().ok_or("encoded")?,
                "{name}: bucket {i} encoding"
            );
            assert_eq!(
                figures(summary, names)?,
                want["figures"],
                "{name}: bucket {i} figures"
            );
            let decoded = NumberSummary::decode(&unhex(want["encoded"].as_str().ok_or("hex")?)?)?;
            assert_eq!(&decoded, summary, "{name}: bucket {i} decodes");
        }
        let merged = summaries
            .into_iter()
            .reduce(NumberSummary::merge)
            .unwrap_or_else(NumberSummary::empty);
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
