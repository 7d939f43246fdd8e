//! The Rust SDK for Komoku key-type plugins.
//!
//! A key type is a WebAssembly component implementing the `key-type` world of
//! `wit/key-type.wit`. With this crate, an author implements [`KeyType`] (only what differs
//! from the defaults, typically [`KeyType::cast`]) and calls [`export_key_type!`]; the
//! bindings and the canonical ABI stay out of sight.
//!
//! ```
//! use komoku_guest::{cast, export_key_type, summary::NumberSummary, Input, KeyType,
//!     Refusal, Resolution, Value};
//!
//! pub struct Celsius;
//!
//! impl KeyType for Celsius {
//!     const NAME: &'static str = "celsius";
//!     const DESCRIPTION: &'static str = "A temperature in degrees Celsius";
//!     type Options = Resolution;
//!     type Summary = NumberSummary;
//!
//!     fn cast(_options: &Resolution, input: Input) -> Result<Value, Refusal> {
//!         let value = cast::number(Self::NAME, &input)?;
//!         if value < -273.15 {
//!             return Err(Refusal::invalid_value("below absolute zero"));
//!         }
//!         Ok(Value::Number(value))
//!     }
//! }
//!
//! export_key_type!(Celsius);
//! ```
//!
//! Modules:
//! - [`cast`]: the shared casting rules (numbers, numeric text, booleans, text);
//! - [`options`]: reading the JSON options object, and the common [`Resolution`] options;
//! - [`summary`]: mergeable bucket summaries (time-weighted numbers, time per state, logs)
//!   and their binary encodings;
//! - [`world`]: the world's functions for a given [`KeyType`], as the export calls them
//!   (also handy for native tests);
//! - [`testing`]: a tiny deterministic random generator for property tests.

pub mod cast;
pub mod options;
pub mod summary;
pub mod testing;
pub mod world;

/// Bindings generated from `wit/key-type.wit`, once, for every plugin built on this SDK.
#[allow(unsafe_code, missing_docs, clippy::too_many_arguments)] // Generated canonical ABI glue.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "key-type",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "komoku_guest::bindings",
        additional_derives: [PartialEq],
    });
}

pub use bindings::komoku::types::types::{
    CheckedOptions, Info, Input, KeyOperations, Operation, Outcome, Point, Refusal, Scheduled,
    TimedOperation, Value,
};
pub use options::{Options, OptionsReader, Resolution};
pub use summary::Summary;

/// The JSON library the SDK uses (for `json!` and custom figures).
pub use serde_json;
/// A JSON object, as options are.
pub use serde_json::Map as JsonMap;
/// A JSON value, as options and rendered figures are.
pub use serde_json::Value as Json;

/// Stable refusal codes shared by the built-in types.
pub mod codes {
    /// The value cannot be cast to the key's type.
    pub const INVALID_VALUE: &str = "invalid_value";
    /// The value is of the right type but outside the key's allowed set.
    pub const VALUE_NOT_ALLOWED: &str = "value_not_allowed";
    /// An option is unknown or has the wrong type or range.
    pub const INVALID_OPTION: &str = "invalid_option";
    /// The key's type does not support the operation (e.g. `increment` on a numeric key).
    pub const UNSUPPORTED_OPERATION: &str = "unsupported_operation";
    /// `render` was asked for a figure the type does not know.
    pub const UNKNOWN_FIGURE: &str = "unknown_figure";
    /// A summary handed back to the plugin could not be decoded.
    pub const INVALID_SUMMARY: &str = "invalid_summary";
}

impl Refusal {
    /// A refusal with `code` (one of [`codes`], or the type's own) and a message for humans.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// `invalid_value`: the value cannot be cast to the key's type.
    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_VALUE, message)
    }

    /// `invalid_option`: an option is unknown or ill-typed.
    pub fn invalid_option(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_OPTION, message)
    }

    /// `unsupported_operation`: the type does not support the operation.
    pub fn unsupported_operation(message: impl Into<String>) -> Self {
        Self::new(codes::UNSUPPORTED_OPERATION, message)
    }
}

impl Value {
    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The value as JSON (a non-finite number becomes `null`).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Boolean(b) => Json::Bool(*b),
            Value::Number(n) => Json::from(*n),
            Value::Text(t) => Json::String(t.clone()),
        }
    }
}

/// What kind of operation produced a point, for [`KeyType::should_store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A `put`.
    Set,
    /// An `increment` or `decrement`.
    Add,
}

/// A key type: every rule of one type of key. Implement what differs from the defaults and
/// export it with [`export_key_type!`].
///
/// Options are read once, by `check-options` ([`Options::read`] over the JSON a client gave),
/// which also encodes them; every later call decodes that encoding (a few bytes, no JSON),
/// so methods receive the parsed [`KeyType::Options`]. The summary gets them too, so a
/// figure may depend on an option. The figures are what [`Summary::figures`] declares.
pub trait KeyType: 'static {
    /// The name clients use (`numeric`, `uptime`, ...).
    const NAME: &'static str;
    /// One line for humans.
    const DESCRIPTION: &'static str;
    /// The key's options, parsed.
    type Options: Options;
    /// The summary of one bucket of history (it gets the key's options).
    type Summary: Summary<Self::Options>;

    /// How strongly this type claims a key created by a first `put` of `sample`.
    /// Default = 0 (never).
    fn guess(_sample: &Input) -> u8 {
        0
    }

    /// Casts a client's value to this type, or refuses it.
    fn cast(options: &Self::Options, input: Input) -> Result<Value, Refusal>;

    /// The value after adding `step` to the key. Default = refused (`unsupported_operation`).
    fn add(
        _options: &Self::Options,
        _previous: Option<&Point>,
        _step: f64,
    ) -> Result<Value, Refusal> {
        Err(Refusal::unsupported_operation(format!(
            "{} keys do not support increment or decrement",
            Self::NAME
        )))
    }

    /// Whether `point` is written to history, given the key's latest stored point.
    /// Default = the [`Resolution`] rules of the options.
    fn should_store(
        options: &Self::Options,
        previous: Option<&Point>,
        point: &Point,
        _kind: OpKind,
    ) -> bool {
        options.resolution().should_store(previous, point)
    }

    /// The automatic value pending while `latest` is the key's latest point. Default = none.
    fn schedule(_options: &Self::Options, _latest: &Point) -> Option<Scheduled> {
        None
    }

    /// Applies one operation. Default = [`world::default_apply`]: cast or add, decide
    /// storage with [`KeyType::should_store`], schedule with [`KeyType::schedule`].
    fn apply(
        options: &Self::Options,
        previous: Option<Point>,
        op: Operation,
        time: f64,
    ) -> Result<Outcome, Refusal> {
        world::default_apply::<Self>(options, previous, op, time)
    }

    /// Summarises consecutive buckets (see [`summary::buckets`]). Default = one
    /// [`Summary::from_bucket`] per bucket, with the key's options.
    fn summarize(
        options: &Self::Options,
        edges: &[f64],
        carried: Option<&Point>,
        points: &[Point],
    ) -> Vec<Self::Summary> {
        summary::buckets(edges, carried, points)
            .iter()
            .map(|bucket| Self::Summary::from_bucket(bucket, options))
            .collect()
    }

    /// The retention policy of this type's keys when no `retention` request covers them, in
    /// the shape of a `retention` request:
    /// `json!({"raw": "7d", "tiers": [["1M", "30d"], ["1H", "2y"], ["1d", null]]})` keeps
    /// raw points 7 days, then 1-minute summaries 30 days, 1-hour summaries 2 years and
    /// 1-day summaries forever. The host reads it once, when the plugin loads, and refuses
    /// the plugin if the policy is invalid. Default = `None`: the server's configured
    /// default (`[retention]`) applies.
    fn default_retention() -> Option<Json> {
        None
    }

    /// Migrates the options a key was defined with under an earlier version of this type
    /// (the JSON object `define` gave, not the completed one) to options this version
    /// accepts: for a version that renames or removes an option existing keys have. The
    /// host calls it when this version loads and [`Options::read`] refuses a key's stored
    /// options; what it returns is stored as the key's options, so return only what the key
    /// was given (renamed, converted), and let defaults keep following the type. An `Err`
    /// (a reason for humans), or options this version refuses too, keeps this version from
    /// loading while such keys exist. Default = no migration (`Err`).
    fn migrate_options(options: JsonMap<String, Json>) -> Result<JsonMap<String, Json>, String> {
        let names: Vec<&str> = options.keys().map(String::as_str).collect();
        Err(format!(
            "{} has no migration for options {names:?}",
            Self::NAME
        ))
    }
}

/// Exports a [`KeyType`] as the plugin's `key-type` world.
///
/// Call it once, at the plugin crate's root: `export_key_type!(MyType);`. The plugin's
/// version in `info` is its own `CARGO_PKG_VERSION`. The exports exist only when compiling
/// for wasm32, so native unit tests link no foreign symbols; they call [`world`] instead.
#[macro_export]
macro_rules! export_key_type {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)] // The canonical ABI exports generated by wit-bindgen.
        const _: () = {
            use $crate::bindings::Guest;

            struct KomokuKeyTypeExport;

            impl Guest for KomokuKeyTypeExport {
                fn info() -> $crate::Info {
                    $crate::world::info::<$ty>(env!("CARGO_PKG_VERSION"))
                }
                fn figures() -> Vec<String> {
                    $crate::world::figures::<$ty>()
                }
                fn guess(sample: $crate::Input) -> u8 {
                    $crate::world::guess::<$ty>(sample)
                }
                fn check_options(
                    options: String,
                ) -> Result<$crate::CheckedOptions, $crate::Refusal> {
                    $crate::world::check_options::<$ty>(options)
                }
                fn migrate_options(options: String) -> Result<String, String> {
                    $crate::world::migrate_options::<$ty>(options)
                }
                fn default_retention() -> Option<String> {
                    $crate::world::default_retention::<$ty>()
                }
                fn apply(
                    batch: Vec<$crate::KeyOperations>,
                ) -> Vec<Vec<Result<$crate::Outcome, $crate::Refusal>>> {
                    $crate::world::apply::<$ty>(batch)
                }
                fn reschedule(
                    options: Vec<u8>,
                    latest: $crate::Point,
                ) -> Option<$crate::Scheduled> {
                    $crate::world::reschedule::<$ty>(options, latest)
                }
                fn summarize(
                    options: Vec<u8>,
                    edges: Vec<f64>,
                    carried: Option<$crate::Point>,
                    points: Vec<$crate::Point>,
                ) -> Vec<Vec<u8>> {
                    $crate::world::summarize::<$ty>(options, edges, carried, points)
                }
                fn merge(options: Vec<u8>, parts: Vec<Vec<u8>>) -> Vec<u8> {
                    $crate::world::merge::<$ty>(options, parts)
                }
                fn render(
                    options: Vec<u8>,
                    summaries: Vec<Vec<u8>>,
                    figures: Vec<String>,
                ) -> Result<String, $crate::Refusal> {
                    $crate::world::render::<$ty>(options, summaries, figures)
                }
            }

            $crate::bindings::export! { KomokuKeyTypeExport with_types_in $crate::bindings }
        };
    };
}
