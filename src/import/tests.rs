//! Unit tests of the readers' syntax and rules, on text; the end-to-end tests (real nginx
//! and Apache, Portico serving the output) are in tests/it/import.rs.
