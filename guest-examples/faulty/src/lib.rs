//! Guests that misbehave in every way the sandbox must survive, plus one export (`ok`) that
//! proves the module otherwise works.
//!
//! Built with Rust's defaults (dlmalloc, a 1 MiB stack, memory grown on demand), not the lean
//! profile, so that running out of memory and stack happen the way they do in ordinary
//! guests. What each export does to the host:
//!
//! | export | behaviour |
//! |---|---|
//! | `ok() -> u32` | returns 7 |
//! | `spin() -> u64` | loops forever: only fuel or the deadline stops it |
//! | `memory_bomb() -> u64` | allocates and writes 1 MiB after 1 MiB; when `memory.grow` fails, the allocator's failure aborts with an `unreachable` trap and an empty panic slot |
//! | `recurse(depth) -> u64` | recurses `depth` levels without a tail call; a large depth exhausts the wasm call stack |
//! | `panic_now(env: Msg)` | panics with `env.text`: a trap with a status-2 reply in the panic slot |
//! | `bad_pointer` | raw export: returns a reply at `0xFFFF_0000`, 4096 bytes, outside memory |
//! | `bad_reply` | raw export: returns an in-bounds reply whose status byte is 9 |

use serde::{Deserialize, Serialize};
use wasmpickle_guest::export;

/// Returns 7: the module works when it is not asked to misbehave.
#[export]
pub fn ok() -> u32 {
    7
}

/// Never returns. The counter goes through `black_box`, so the loop cannot be removed.
#[export]
pub fn spin() -> u64 {
    let mut i = 0u64;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

/// Allocates and writes 1 MiB at a time, keeping everything, until allocation fails. Never
/// returns: the failed allocation aborts the instance.
#[export]
pub fn memory_bomb() -> u64 {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Every byte is written, so every page is touched, not only reserved.
        chunks.push(vec![0xa5; 1 << 20]);
        std::hint::black_box(&chunks);
    }
}

/// A value read with a volatile load, so the compiler can neither fold nor reorder the
/// arithmetic in [`recurse`].
static ONE: u64 = 1;

/// Recurses `depth` levels and returns a checksum of the path (`recurse(0)` is 1). The work
/// after each call (volatile reads, a rotate and a multiply) is not an accumulation LLVM can
/// turn into a loop, so every level is a wasm call frame; no local's address is taken, so no
/// level uses the shadow stack in linear memory. Deep enough, it exhausts the engine's wasm
/// stack.
#[export]
pub fn recurse(depth: u64) -> u64 {
    descend(depth)
}

#[inline(never)]
fn descend(depth: u64) -> u64 {
    // SAFETY: `ONE` is a valid, initialized, never-written static.
    let one = unsafe { std::ptr::read_volatile(&ONE) };
    if depth == 0 {
        return one;
    }
    let below = descend(depth - one);
    // SAFETY: as above.
    let k = unsafe { std::ptr::read_volatile(&ONE) };
    below.rotate_left((depth % 63) as u32).wrapping_mul(3 * k) ^ depth
}

/// The environment of [`panic_now`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Msg {
    /// The panic message.
    pub text: String,
}

/// Panics with the captured text.
#[export]
pub fn panic_now(env: Msg) {
    panic!("{}", env.text);
}

/// Raw exports with the pickled signature that break the reply contract. They bypass
/// `#[export]` on purpose.
#[cfg(target_family = "wasm")]
mod raw {
    use wasmpickle_guest::abi::pack;

    /// Returns a reply location far outside memory (guests are far smaller than 4 GiB).
    #[unsafe(export_name = "bad_pointer")]
    extern "C" fn bad_pointer(_env_ptr: u32, _env_len: u32, _args_ptr: u32, _args_len: u32) -> i64 {
        pack(0xFFFF_0000, 4096)
    }

    /// A reply with an unknown status byte (9) followed by a valid value (`nil`).
    static BAD_REPLY: [u8; 2] = [9, 0xc0];

    /// Returns [`BAD_REPLY`], which is inside memory.
    #[unsafe(export_name = "bad_reply")]
    extern "C" fn bad_reply(_env_ptr: u32, _env_len: u32, _args_ptr: u32, _args_len: u32) -> i64 {
        pack(BAD_REPLY.as_ptr() as usize as u32, BAD_REPLY.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_well_behaved_parts_work_natively() {
        assert_eq!(ok(), 7);
        assert_eq!(recurse(0), 1);
        assert_eq!(recurse(3), recurse(3));
        let err = std::panic::catch_unwind(|| {
            panic_now(Msg {
                text: "boom".into(),
            })
        });
        assert!(err.is_err());
    }
}
