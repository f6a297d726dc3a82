//! Warm pools: what `DELEGATE_POOL` asks for ([`spec`]). The pool's
//! runtime (filling, claiming, recycling) lives in the engine
//! (`jobs/engine/pool/`); its rows in the store (`store/pool.rs`); the
//! provider hooks in [`crate::provider`] (`prepare_idle`, `deliver_bootstrap`,
//! `list_idle`, `template_version`). This module sits below `config`, so
//! settings can parse a pool without knowing the engine.

pub mod spec;

pub use spec::{PoolClass, PoolSpecError, parse_pool};
