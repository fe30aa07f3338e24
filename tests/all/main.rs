//! The wasmpickle integration suite: one test binary for the whole workspace.

mod support;

mod cli;
mod format;
mod guests;
mod runtime;
