//! [`BumpAlloc`]: the allocator of the lean profile.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::AtomicUsize;

/// A global allocator that hands out memory by bumping a pointer and (almost) never frees.
///
/// Opt in from a guest crate:
///
/// ```
/// #[global_allocator]
/// static ALLOC: wasmpickle_guest::BumpAlloc = wasmpickle_guest::BumpAlloc::new();
/// # fn main() { assert_eq!(vec![1u8, 2, 3].len(), 3); }
/// ```
///
/// On `wasm32` it starts at the linker's `__heap_base` and calls `memory.grow` only when an
/// allocation runs past the end of memory, by exactly the pages needed. Freeing is a no-op,
/// except that freeing (or growing) the most recent allocation gives back (or extends) its
/// bytes in place, which covers a temporary buffer and a `Vec` that grows while nothing else
/// allocates.
///
/// Why: wasmpickle gives every call a fresh instance, so memory never needs to be reused;
/// what costs time is touching new pages and growing memory. With a small stack and a large
/// enough initial memory (the lean profile in the crate docs) a call touches no page it does
/// not need and never grows memory, where the default allocator (dlmalloc) grows memory on its
/// first allocation and keeps bookkeeping in pages of its own.
///
/// # When not to use it
///
/// * When a host keeps one instance alive across many calls (a stateful object, or calling
///   `wasmpickle_free`): nothing is reused, so memory only ever grows until the memory cap
///   ends the instance.
/// * When one call allocates and frees a lot (a long loop building and dropping temporary
///   strings or maps): the peak memory is the sum of all allocations, not their maximum.
///
/// On other targets (`cargo test` of a guest crate on the host) it forwards to
/// [`std::alloc::System`], so the same `#[global_allocator]` line works in native unit tests.
#[derive(Debug, Default)]
pub struct BumpAlloc {
    /// The next free address, 0 until the first allocation (memory address 0 is never in the
    /// heap: the stack and static data come first).
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    next: AtomicUsize,
}

impl BumpAlloc {
    /// The allocator, as a constant for a `static`.
    pub const fn new() -> BumpAlloc {
        BumpAlloc {
            next: AtomicUsize::new(0),
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm32 {
    use core::arch::wasm32::{memory_grow, memory_size};
    use std::sync::atomic::Ordering::Relaxed;

    use super::BumpAlloc;

    const PAGE: usize = 65536;

    unsafe extern "C" {
        /// The first address after static data and the stack, defined by wasm-ld.
        static __heap_base: u8;
    }

    impl BumpAlloc {
        /// The next free address.
        pub(super) fn next(&self) -> usize {
            match self.next.load(Relaxed) {
                0 => (&raw const __heap_base) as usize,
                next => next,
            }
        }

        /// Hands out `start..start + size` for the first `start >= next` aligned to `align`,
        /// growing memory if needed; null when the address space or memory runs out.
        pub(super) fn bump(&self, align: usize, size: usize) -> *mut u8 {
            let next = self.next();
            // `align` is a power of two, as `Layout` guarantees.
            let Some(start) = next.checked_add(align - 1).map(|n| n & !(align - 1)) else {
                return std::ptr::null_mut();
            };
            match self.claim(start, size) {
                true => start as *mut u8,
                false => std::ptr::null_mut(),
            }
        }

        /// Makes `start..start + size` the last allocation, growing memory if needed.
        pub(super) fn claim(&self, start: usize, size: usize) -> bool {
            let Some(end) = start.checked_add(size) else {
                return false;
            };
            let have = memory_size(0).saturating_mul(PAGE);
            if end > have {
                let pages = (end - have).div_ceil(PAGE);
                if memory_grow(0, pages) == usize::MAX {
                    return false;
                }
            }
            self.next.store(end, Relaxed);
            true
        }
    }
}

// SAFETY (wasm32): every block handed out lies between `__heap_base`, which nothing else uses,
// and the end of memory; blocks never overlap because `next` only moves back when the block
// ending at `next` is freed or shrunk, and then only to that block's start or new end.
// Elsewhere the calls go to `System`, which upholds the contract itself.
unsafe impl GlobalAlloc for BumpAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(target_arch = "wasm32")]
        return self.bump(layout.align(), layout.size());
        #[cfg(not(target_arch = "wasm32"))]
        // SAFETY: our caller upholds `GlobalAlloc::alloc`'s contract.
        return unsafe { std::alloc::System.alloc(layout) };
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        #[cfg(target_arch = "wasm32")]
        {
            use std::sync::atomic::Ordering::Relaxed;
            // Give back the most recent allocation only; everything else is leaked.
            if ptr as usize + layout.size() == self.next() {
                self.next.store(ptr as usize, Relaxed);
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        // SAFETY: `ptr` came from `System` with this layout (see `alloc`).
        unsafe {
            std::alloc::System.dealloc(ptr, layout)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        #[cfg(target_arch = "wasm32")]
        {
            // The most recent allocation grows or shrinks in place.
            if ptr as usize + layout.size() == self.next() {
                return match self.claim(ptr as usize, new_size) {
                    true => ptr,
                    false => std::ptr::null_mut(),
                };
            }
            let new = self.bump(layout.align(), new_size);
            if !new.is_null() {
                // SAFETY: `ptr` is valid for `layout.size()` bytes, `new` for `new_size`, and
                // they do not overlap: `new` starts at or after the end of every live block.
                unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            }
            new
        }
        #[cfg(not(target_arch = "wasm32"))]
        // SAFETY: our caller upholds `GlobalAlloc::realloc`'s contract for `System`'s block.
        unsafe {
            std::alloc::System.realloc(ptr, layout, new_size)
        }
    }
}
