//! delegate-guest: the runner inside a delegate VM.

pub mod callback;
