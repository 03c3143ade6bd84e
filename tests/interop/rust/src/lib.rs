//! No code of its own: the interop tests are in `tests/` (the `spiffe` crate against `sigil node`).
