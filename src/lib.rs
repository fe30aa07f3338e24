//! Integration tests and benchmarks of the wasmpickle workspace live in `tests/` and `benches/`.
