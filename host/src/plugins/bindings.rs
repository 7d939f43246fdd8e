//! The WIT bindings, generated once. Nothing else in the host names generated types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "key-type",
});

pub use self::komoku::types::types as wit;
