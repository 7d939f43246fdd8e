//! The WIT bindings, generated once. Nothing else in the host names generated types.
//!
//! - [`v2`]: `komoku:types@0.2.0` (`wit/key-type.wit`), what plugins are built for today;
//! - [`v1`]: `komoku:types@0.1.0` (`wit/v0.1.0/`), bound to `key-type-base` (the exports every
//!   0.1.0 plugin has; the two added later are looked up by name), so plugins built before
//!   0.2.0 keep loading through the adapter in [`super::runtime`].

/// `komoku:types@0.2.0`.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit/key-type.wit",
        world: "key-type",
    });

    pub use self::komoku::types::types as wit;
}

/// `komoku:types@0.1.0`.
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "key-type-base",
    });

    pub use self::komoku::types::types as wit;
}
