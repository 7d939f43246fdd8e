//! The `key-type` world's functions for a given [`KeyType`], as [`export_key_type!`] calls
//! them. Native tests call them directly, with options as JSON text like the host does.
//!
//! [`export_key_type!`]: crate::export_key_type

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::rc::Rc;

use crate::options;
use crate::summary::Summary;
use crate::{Info, Input, Json, KeyType, OpKind, Operation, Outcome, Point, Refusal, Scheduled};

/// How many distinct options strings the memo keeps (most recently used first).
const MEMO_SIZE: usize = 16;

/// One memoized parse: the key type, the options text, the parsed options.
type MemoEntry = (TypeId, String, Rc<dyn Any>);

thread_local! {
    /// Parsed options by options text. A wasm instance is single-threaded, and the host
    /// passes the same text on every call for a key, so a put does not reparse JSON.
    static MEMO: RefCell<Vec<MemoEntry>> = const { RefCell::new(Vec::new()) };
}

/// The parsed options for `json`, memoized.
pub fn parsed_options<T: KeyType>(json: &str) -> Result<Rc<T::Options>, Refusal> {
    let id = TypeId::of::<T>();
    let hit = MEMO.with_borrow_mut(|memo| {
        let index = memo
            .iter()
            .position(|(t, text, _)| *t == id && text == json)?;
        let entry = memo.remove(index);
        let parsed = Rc::clone(&entry.2);
        memo.insert(0, entry);
        Some(parsed)
    });
    if let Some(parsed) = hit.and_then(|p| p.downcast::<T::Options>().ok()) {
        return Ok(parsed);
    }
    let (parsed, _) = options::parse::<T::Options>(json)?;
    let parsed = Rc::new(parsed);
    remember::<T>(json, Rc::clone(&parsed));
    Ok(parsed)
}

/// Puts a parse into the memo, evicting the least recently used one.
fn remember<T: KeyType>(json: &str, parsed: Rc<T::Options>) {
    MEMO.with_borrow_mut(|memo| {
        memo.insert(0, (TypeId::of::<T>(), json.to_owned(), parsed));
        memo.truncate(MEMO_SIZE);
    });
}

/// The options for calls that cannot refuse (`reschedule`, `summarize`, `merge`): the
/// parsed `json`, or the defaults if it does not parse (the host only passes options that
/// `check-options` returned, so that is a host bug, not a reason to lose data).
fn options_or_default<T: KeyType>(json: &str) -> Rc<T::Options> {
    parsed_options::<T>(json)
        .unwrap_or_else(|_| parsed_options::<T>("{}").expect("a type's default options are valid"))
}

/// `info`: the type's identity; `version` is the plugin crate's version.
pub fn info<T: KeyType>(version: &str) -> Info {
    let (_, default_options) =
        options::parse::<T::Options>("{}").expect("a type's default options are valid");
    Info {
        name: T::NAME.to_owned(),
        version: version.to_owned(),
        description: T::DESCRIPTION.to_owned(),
        default_options,
    }
}

/// `default-retention`: the type's retention policy as JSON text, if it chose one.
pub fn default_retention<T: KeyType>() -> Option<String> {
    T::default_retention().map(|policy| policy.to_string())
}

/// `migrate-options`: a key's stored options (a JSON object) as this version takes them.
pub fn migrate_options<T: KeyType>(options: String) -> Result<String, String> {
    let Ok(Json::Object(options)) = serde_json::from_str::<Json>(&options) else {
        return Err(format!("options are not a JSON object: {options}"));
    };
    T::migrate_options(options).map(|migrated| Json::Object(migrated).to_string())
}

/// `guess`: how strongly the type claims a new key whose first value is `sample`.
pub fn guess<T: KeyType>(sample: Input) -> u8 {
    T::guess(&sample)
}

/// `check-options`: the options completed with defaults, as JSON text.
pub fn check_options<T: KeyType>(options: String) -> Result<String, Refusal> {
    let (parsed, complete) = options::parse::<T::Options>(&options)?;
    remember::<T>(&complete, Rc::new(parsed));
    Ok(complete)
}

/// `apply`: one operation at `time`, given the key's latest stored point.
pub fn apply<T: KeyType>(
    options: String,
    previous: Option<Point>,
    op: Operation,
    time: f64,
) -> Result<Outcome, Refusal> {
    let parsed = parsed_options::<T>(&options)?;
    T::apply(&parsed, previous, op, time)
}

/// The default [`KeyType::apply`]: cast (`set`) or [`KeyType::add`] (`add`), decide storage
/// with [`KeyType::should_store`], and schedule from the newer of `previous` and the new
/// point (a backfill older than `previous` leaves the pending value as it was).
pub fn default_apply<T: KeyType + ?Sized>(
    options: &T::Options,
    previous: Option<Point>,
    op: Operation,
    time: f64,
) -> Result<Outcome, Refusal> {
    let (value, kind) = match op {
        Operation::Set(input) => (T::cast(options, input)?, OpKind::Set),
        Operation::Add(step) => (T::add(options, previous.as_ref(), step)?, OpKind::Add),
    };
    let point = Point { time, value };
    let store = T::should_store(options, previous.as_ref(), &point, kind);
    let latest = match &previous {
        Some(p) if p.time > time => p,
        _ => &point,
    };
    let schedule = T::schedule(options, latest);
    Ok(Outcome {
        value: point.value,
        store,
        schedule,
    })
}

/// `reschedule`: the pending automatic value given the key's latest point.
pub fn reschedule<T: KeyType>(options: String, latest: Point) -> Option<Scheduled> {
    T::schedule(&options_or_default::<T>(&options), &latest)
}

/// `summarize`: one encoded summary per bucket. Unsorted points are sorted first.
pub fn summarize<T: KeyType>(
    options: String,
    edges: Vec<f64>,
    carried: Option<Point>,
    mut points: Vec<Point>,
) -> Vec<Vec<u8>> {
    if !points.is_sorted_by(|a, b| a.time <= b.time) {
        points.sort_by(|a, b| a.time.total_cmp(&b.time));
    }
    let parsed = options_or_default::<T>(&options);
    T::summarize(&parsed, &edges, carried.as_ref(), &points)
        .iter()
        .map(Summary::encode)
        .collect()
}

/// `merge`: the summary of the union of adjacent buckets, oldest first.
///
/// # Panics
///
/// On a part that does not decode: the plugin traps rather than silently dropping
/// history, so the host keeps the parts it has.
pub fn merge<T: KeyType>(_options: String, parts: Vec<Vec<u8>>) -> Vec<u8> {
    let merged = parts
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            T::Summary::decode(bytes)
                .unwrap_or_else(|e| panic!("{}: cannot merge summary #{index}: {e}", T::NAME))
        })
        .reduce(Summary::merge)
        .unwrap_or_else(T::Summary::empty);
    merged.encode()
}

/// `render`: a JSON array with one element per summary, the default figure (a bare scalar)
/// when `figures` is empty, else an object of the named figures; `["*"]` names every figure
/// the type knows.
pub fn render<T: KeyType>(
    options: String,
    summaries: Vec<Vec<u8>>,
    figures: Vec<String>,
) -> Result<String, Refusal> {
    let figures = if figures.len() == 1 && figures[0] == "*" {
        T::FIGURES.iter().map(|f| f.to_string()).collect()
    } else {
        figures
    };
    if let Some(unknown) = figures.iter().find(|f| !T::FIGURES.contains(&f.as_str())) {
        return Err(Refusal::new(
            crate::codes::UNKNOWN_FIGURE,
            format!(
                "{} has no figure {unknown:?}; known figures: {}",
                T::NAME,
                T::FIGURES.join(", ")
            ),
        ));
    }
    let parsed = parsed_options::<T>(&options)?;
    let mut rendered = Vec::with_capacity(summaries.len());
    for (index, bytes) in summaries.iter().enumerate() {
        let summary = T::Summary::decode(bytes).map_err(|e| {
            Refusal::new(
                crate::codes::INVALID_SUMMARY,
                format!("summary #{index} is not a {} summary: {e}", T::NAME),
            )
        })?;
        rendered.push(if figures.is_empty() {
            T::default_figure(&parsed, &summary)
        } else {
            Json::Object(
                figures
                    .iter()
                    .map(|name| (name.clone(), T::figure(&parsed, &summary, name)))
                    .collect(),
            )
        });
    }
    Ok(Json::Array(rendered).to_string())
}
