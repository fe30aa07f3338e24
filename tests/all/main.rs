//! The wasmpickle integration suite: one test binary for the whole workspace.

mod support;

mod cache;
mod cli;
mod format;
mod guests;
mod identity;
mod journal;
mod memo;
mod pool;
mod runtime;
mod seal;
mod shake;
mod sign;
mod store;
mod twins;
