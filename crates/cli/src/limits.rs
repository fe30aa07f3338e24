//! The limit flags, shared by `pack` and `run`.
//!
//! The same four flags mean two things: on `pack` they are the limits the call *requests*
//! (stored in the pickle as [`CallLimits`] and part of the call's id), on `run` they are the
//! runtime's *caps* ([`Limits`]). A runtime honours a request only up to its caps, so a
//! pickle can lower its budget but never raise it.

use std::time::Duration;

use clap::Args;
use wasmpickle::{CallLimits, Limits};

/// Fuel, deadline, memory and table limits.
#[derive(Args, Clone, Copy, Debug, Default)]
#[command(next_help_heading = "Limits")]
pub(crate) struct LimitArgs {
    /// Fuel budget, roughly one unit per WebAssembly instruction [run default: 10000000000]
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// Wall-clock deadline in milliseconds [run default: 10000]
    #[arg(long, value_name = "N")]
    deadline_ms: Option<u64>,

    /// Cap on linear memory in bytes, rounded down to 64 KiB pages [run default: 268435456]
    #[arg(long, value_name = "BYTES")]
    max_memory: Option<u64>,

    /// Cap on elements per table [run default: 65536]
    #[arg(long, value_name = "N")]
    max_table_elements: Option<u64>,
}

impl LimitArgs {
    /// The limits a packed call requests: only the flags given.
    pub(crate) fn call_limits(&self) -> CallLimits {
        let mut limits = CallLimits::new();
        if let Some(n) = self.fuel {
            limits = limits.with_fuel(n);
        }
        if let Some(ms) = self.deadline_ms {
            limits = limits.with_deadline_ms(ms);
        }
        if let Some(bytes) = self.max_memory {
            limits = limits.with_max_memory(bytes);
        }
        if let Some(n) = self.max_table_elements {
            limits = limits.with_max_table_elements(n);
        }
        limits
    }

    /// The runtime's caps: [`Limits::default`] with the flags given applied.
    pub(crate) fn runtime_limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(n) = self.fuel {
            limits.fuel(n);
        }
        if let Some(ms) = self.deadline_ms {
            limits.deadline(Duration::from_millis(ms));
        }
        if let Some(bytes) = self.max_memory {
            limits.max_memory(bytes);
        }
        if let Some(n) = self.max_table_elements {
            limits.max_table_elements(n);
        }
        limits
    }
}
