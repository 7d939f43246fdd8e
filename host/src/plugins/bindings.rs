//! The WIT bindings, generated once. Nothing else in the host names generated types.
//!
//! Bound to `key-type-base`, the exports every plugin has. The exports `key-type` adds on
//! top are optional for the host: [`super::runtime`] looks them up by name, so plugins built
//! before they existed keep loading.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "key-type-base",
});

pub use self::komoku::types::types as wit;
