//! What a call may consume, and which host functions a module may import.

use std::time::Duration;

use wasmpickle_format::CallLimits;

/// The resources one call may use. A [`Runtime`](crate::Runtime) holds one `Limits` that is
/// both the default for every call and the cap on what a call may request: a pickle can ask
/// for less ([`CallLimits`]) but never for more.
///
/// | limit | default | deterministic |
/// |---|---|---|
/// | fuel | 10,000,000,000 units (roughly one per instruction; seconds of work) | yes |
/// | deadline | 10 s of wall-clock time | no: a backstop for time spent outside fuel |
/// | max memory | 256 MiB of linear memory | yes |
/// | max table elements | 65,536 | yes |
///
/// Fuel is the budget that decides whether a call finishes, because it runs out at the same
/// instruction on every machine. The deadline catches what fuel cannot see and is checked by a
/// timer, so it fires up to one timer tick (10 ms by default) late.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    fuel: u64,
    deadline: Duration,
    max_memory: u64,
    max_table_elements: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000_000,
            deadline: Duration::from_secs(10),
            max_memory: 256 << 20,
            max_table_elements: 65_536,
        }
    }
}

impl Limits {
    /// The defaults in the table above.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the fuel budget.
    pub fn fuel(&mut self, fuel: u64) -> &mut Self {
        self.fuel = fuel;
        self
    }

    /// Sets the wall-clock deadline.
    pub fn deadline(&mut self, deadline: Duration) -> &mut Self {
        self.deadline = deadline;
        self
    }

    /// Sets the cap on linear memory in bytes. Rounded down to whole 64 KiB pages when
    /// enforced.
    pub fn max_memory(&mut self, bytes: u64) -> &mut Self {
        self.max_memory = bytes;
        self
    }

    /// Sets the cap on elements per table.
    pub fn max_table_elements(&mut self, n: u64) -> &mut Self {
        self.max_table_elements = n;
        self
    }

    /// The fuel budget.
    pub fn get_fuel(&self) -> u64 {
        self.fuel
    }

    /// The wall-clock deadline.
    pub fn get_deadline(&self) -> Duration {
        self.deadline
    }

    /// The memory cap in bytes.
    pub fn get_max_memory(&self) -> u64 {
        self.max_memory
    }

    /// The table-element cap.
    pub fn get_max_table_elements(&self) -> u64 {
        self.max_table_elements
    }

    /// These limits lowered to what `requested` asks for, where it asks for less.
    pub fn restrict(&self, requested: &CallLimits) -> Limits {
        Limits {
            fuel: requested.fuel().map_or(self.fuel, |f| f.min(self.fuel)),
            deadline: requested.deadline_ms().map_or(self.deadline, |ms| {
                Duration::from_millis(ms).min(self.deadline)
            }),
            max_memory: requested
                .max_memory()
                .map_or(self.max_memory, |m| m.min(self.max_memory)),
            max_table_elements: requested
                .max_table_elements()
                .map_or(self.max_table_elements, |n| n.min(self.max_table_elements)),
        }
    }
}

/// A host function a runtime may grant to modules, imported from the `wasmpickle` module (see
/// `docs/abi.md` §7). Nothing is granted by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Grant {
    /// `wasmpickle.log(ptr: i32, len: i32)`: logs UTF-8 text through `tracing` (target
    /// `wasmpickle::guest`). Deterministic: it cannot influence the result.
    Log,
    /// `wasmpickle.clock_ms() -> i64`: milliseconds since the Unix epoch. Not deterministic.
    Clock,
}

impl Grant {
    /// Every grant this build knows.
    pub const ALL: [Grant; 2] = [Grant::Log, Grant::Clock];

    /// The import's field name under the `wasmpickle` module.
    pub fn import_name(self) -> &'static str {
        match self {
            Grant::Log => "log",
            Grant::Clock => "clock_ms",
        }
    }

    /// True when a call that uses this import still gives the same result everywhere.
    pub fn is_deterministic(self) -> bool {
        match self {
            Grant::Log => true,
            Grant::Clock => false,
        }
    }

    /// The grant for an import name, if there is one.
    pub fn from_import_name(name: &str) -> Option<Grant> {
        Grant::ALL.into_iter().find(|g| g.import_name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_only_lower_limits() {
        let caps = *Limits::new().fuel(1000).max_memory(1 << 20);
        let asked = CallLimits::new()
            .with_fuel(10)
            .with_max_memory(1 << 30)
            .with_deadline_ms(5);
        let got = caps.restrict(&asked);
        assert_eq!(got.get_fuel(), 10);
        assert_eq!(
            got.get_max_memory(),
            1 << 20,
            "a request above the cap is capped"
        );
        assert_eq!(got.get_deadline(), Duration::from_millis(5));
        assert_eq!(caps.restrict(&CallLimits::new()), caps);
    }
}
