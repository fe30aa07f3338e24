//! The object slot: where `#[object]` keeps an instance's live object between calls.
//!
//! Reached through `wasmpickle_guest::__private`, which is hidden and not part of the stable
//! API: only the macro of the same version may use it.

use std::cell::UnsafeCell;
use std::fmt;

use crate::runtime::error_reply;

/// One object of type `T`, or none before the constructor first succeeds.
///
/// `#[object]` declares one per object type, as a plain `static` in an anonymous block that
/// only the object's exports can name. Being a static is the point: the object and everything
/// it owns live in linear memory (its heap allocations through the global allocator, whose
/// state is in linear memory too), so a host that snapshots an instance by copying its memory
/// and globals carries the object along. No state may live anywhere else. Hence not a
/// `thread_local!`: where thread-locals are stored is the toolchain's choice (with the wasm
/// threads feature they move to a block each thread sets up at run time), and they buy nothing
/// on a target with one thread.
///
/// An `UnsafeCell` rather than a `RefCell` or a `Mutex`: on `wasm32-unknown-unknown` there is
/// exactly one thread, and the exports that use the slot never overlap (see the safety
/// contract of [`put`](ObjectSlot::put) and [`with`](ObjectSlot::with)), so a borrow flag
/// would be checked and could never fire.
pub struct ObjectSlot<T> {
    value: UnsafeCell<Option<T>>,
}

// SAFETY: every access to the value goes through `put` and `with`, which are `unsafe` and
// require their callers to guarantee that accesses never overlap and all happen on one
// thread. Sharing `&ObjectSlot<T>` between threads therefore lets no thread touch the value
// that its contract does not allow, whatever `T` is. The generated code upholds the contract
// because on `wasm32-unknown-unknown` there is one thread, the host calls one export at a time
// and guest code cannot call an export (the slot and the exports that use it cannot be named
// outside the block `#[object]` generates), so a method cannot re-enter the slot.
unsafe impl<T> Sync for ObjectSlot<T> {}

impl<T> ObjectSlot<T> {
    /// An empty slot, as in a fresh instance.
    pub const fn new() -> ObjectSlot<T> {
        ObjectSlot {
            value: UnsafeCell::new(None),
        }
    }

    /// Stores `value`, dropping the object it replaces (after the replacement, so the old
    /// object's `Drop` sees a consistent slot).
    ///
    /// # Safety
    ///
    /// No other access to this slot may happen during the call (from another thread, or
    /// re-entrantly from the drop of the old object), and every access to the slot must happen
    /// on the same thread.
    pub unsafe fn put(&self, value: T) {
        // SAFETY: the caller guarantees exclusive access for the duration of this call; the
        // reference ends with the statement.
        let previous = unsafe { (*self.value.get()).replace(value) };
        drop(previous);
    }

    /// Runs `call` on the object and returns its reply, or a guest-error reply
    /// `object <name> is not constructed` when the slot is empty.
    ///
    /// # Safety
    ///
    /// No other access to this slot may happen while `call` runs (from another thread, or
    /// re-entrantly from `call`), and every access to the slot must happen on the same thread.
    pub unsafe fn with(&self, name: &str, call: impl FnOnce(&mut T) -> Vec<u8>) -> Vec<u8> {
        // SAFETY: the caller guarantees exclusive access until `call` returns, which is as
        // long as this reference lives.
        let value = unsafe { &mut *self.value.get() };
        match value {
            Some(object) => call(object),
            None => error_reply(&format!("object {name} is not constructed")),
        }
    }
}

impl<T> Default for ObjectSlot<T> {
    fn default() -> ObjectSlot<T> {
        ObjectSlot::new()
    }
}

/// Shows no contents: reading them would need the exclusive access only the exports have.
impl<T> fmt::Debug for ObjectSlot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectSlot").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use wasmpickle_format::abi::{GuestFailure, Reply, Status, decode_reply};

    use super::*;
    use crate::runtime::ok_reply;

    #[test]
    fn empty_slot_replies_not_constructed() {
        let slot = ObjectSlot::<u32>::new();
        // SAFETY: the test is the slot's only user, on one thread.
        let reply = unsafe { slot.with("Counter", |n| ok_reply(n)) };
        match decode_reply(&reply).unwrap() {
            Reply::Failed(status, failure) => {
                assert_eq!(status, Status::Error);
                assert_eq!(
                    failure,
                    GuestFailure::new("object Counter is not constructed")
                );
            }
            Reply::Ok(bytes) => panic!("expected a failure, got ok {bytes:?}"),
        }
    }

    #[test]
    fn put_replaces_and_drops_the_previous_object() {
        let first = Rc::new(1u32);
        let slot = ObjectSlot::new();
        // SAFETY: the test is the slot's only user, on one thread.
        unsafe {
            slot.put(Rc::clone(&first));
            assert_eq!(Rc::strong_count(&first), 2);
            slot.put(Rc::new(2));
            assert_eq!(Rc::strong_count(&first), 1);
            let reply = slot.with("Counter", |n| {
                *n = Rc::new(**n + 1);
                ok_reply(&**n)
            });
            assert_eq!(reply, [0, 3]);
        }
        assert_eq!(format!("{slot:?}"), "ObjectSlot { .. }");
    }
}
