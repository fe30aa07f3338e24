;; add.wat: a wasmpickle guest written by hand, with no SDK, to show that docs/abi.md is all a
;; module needs to follow. It exports one pickled function:
;;
;;     add(env: k, args: [x]) -> k + x
;;
;; where the environment k and the argument x are integers 0..=127, i.e. MessagePack
;; "positive fixint" bytes 0x00..=0x7f. Anything else gets a status-3 (bad input) reply.
;;
;; Memory layout (one 64 KiB page to start with):
;;
;;     0x0000 .. 0x0100   constant data: the bad-input reply
;;     0x0100 ..          heap: bump-allocated by wasmpickle_alloc, never freed (every call
;;                        gets a fresh instance, so nothing needs to be reused)
(module
  (memory (export "memory") 1)

  ;; The next free address of the bump allocator.
  (global $next (mut i32) (i32.const 0x100))

  ;; The bad-input reply, as literal bytes: status 3, then the failure map
  ;; {"message": "add takes an env k and args [x], integers 0..=127"}.
  (data (i32.const 0x10)
    "\03"                ;; status: bad input
    "\81"                ;; fixmap with 1 entry
    "\a7" "message"      ;; key: fixstr of 7 bytes
    "\d9\31"             ;; value: str8 of 0x31 = 49 bytes
    "add takes an env k and args [x], integers 0..=127")
  ;; Its length: 1 + 1 + 8 + 2 + 49.
  (global $bad_input_len i32 (i32.const 61))

  ;; wasmpickle_alloc(len) -> ptr: `len` bytes that stay valid until the instance is dropped.
  ;; Grows memory when the heap runs past its end; traps if memory cannot grow.
  (func $alloc (export "wasmpickle_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local $end i32)
    (local.set $ptr (global.get $next))
    ;; end = ptr + len, rounded up to 8 so the next block is aligned too.
    (local.set $end
      (i32.and
        (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 7))
        (i32.const -8)))
    ;; A length so large that the sum wrapped around is never satisfiable.
    (if (i32.lt_u (local.get $end) (local.get $ptr)) (then unreachable))
    ;; Grow by the missing pages: ceil((end - size_in_bytes) / 65536).
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u
                  (i32.add
                    (i32.sub (local.get $end) (i32.shl (memory.size) (i32.const 16)))
                    (i32.const 0xffff))
                  (i32.const 16)))
              (i32.const -1))
          (then unreachable))))
    (global.set $next (local.get $end))
    (local.get $ptr))

  ;; Packs a reply location into the i64 an export returns: ptr << 32 | len.
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))

  ;; add(env_ptr, env_len, args_ptr, args_len) -> i64, the pickled export.
  (func (export "add")
    (param $env_ptr i32) (param $env_len i32) (param $args_ptr i32) (param $args_len i32)
    (result i64)
    (local $k i32)
    (local $x i32)
    (local $sum i32)
    (local $reply i32)

    ;; The environment must be exactly one byte, a positive fixint.
    (block $bad
      (br_if $bad (i32.ne (local.get $env_len) (i32.const 1)))
      (local.set $k (i32.load8_u (local.get $env_ptr)))
      (br_if $bad (i32.gt_u (local.get $k) (i32.const 0x7f)))

      ;; The arguments must be exactly two bytes: 0x91 (a fixarray of one element), then a
      ;; positive fixint.
      (br_if $bad (i32.ne (local.get $args_len) (i32.const 2)))
      (br_if $bad (i32.ne (i32.load8_u (local.get $args_ptr)) (i32.const 0x91)))
      (local.set $x (i32.load8_u offset=1 (local.get $args_ptr)))
      (br_if $bad (i32.gt_u (local.get $x) (i32.const 0x7f)))

      ;; 0 ..= 254: a positive fixint below 128, else uint8 (0xcc, then the byte).
      (local.set $sum (i32.add (local.get $k) (local.get $x)))
      (if (i32.lt_u (local.get $sum) (i32.const 0x80))
        (then
          ;; Reply: status 0 (ok), the fixint.
          (local.set $reply (call $alloc (i32.const 2)))
          (i32.store8 (local.get $reply) (i32.const 0))
          (i32.store8 offset=1 (local.get $reply) (local.get $sum))
          (return (call $pack (local.get $reply) (i32.const 2))))
        (else
          ;; Reply: status 0 (ok), 0xcc, the byte.
          (local.set $reply (call $alloc (i32.const 3)))
          (i32.store8 (local.get $reply) (i32.const 0))
          (i32.store8 offset=1 (local.get $reply) (i32.const 0xcc))
          (i32.store8 offset=2 (local.get $reply) (local.get $sum))
          (return (call $pack (local.get $reply) (i32.const 3))))))

    ;; Anything else: the constant bad-input reply. Replies need not be allocated; any
    ;; region inside memory will do.
    (call $pack (i32.const 0x10) (global.get $bad_input_len)))

  ;; The export's description (docs/abi.md §8), so tools can show `add(env: u8, x: u8) -> u16`
  ;; without running code. One MessagePack map:
  ;; {"name": "add", "doc": "...", "env": "u8", "params": [{"name": "x", "type": "u8"}],
  ;;  "returns": "u16"}
  (@custom "wasmpickle.exports"
    "\85"                                ;; fixmap, 5 entries
    "\a4" "name"    "\a3" "add"
    "\a3" "doc"     "\d9\33"             ;; str8 of 0x33 = 51 bytes
                    "Adds the captured k to x. Hand-written WAT, no SDK."
    "\a3" "env"     "\a2" "u8"
    "\a6" "params"  "\91"                ;; fixarray, 1 element
                    "\82"                ;; fixmap, 2 entries
                    "\a4" "name" "\a1" "x"
                    "\a4" "type" "\a2" "u8"
    "\a7" "returns" "\a3" "u16")
)
