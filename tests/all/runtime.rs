//! The sandbox against hand-written modules: the calling sequence and every error kind that
//! does not need a compiled guest.

use std::time::Duration;

use wasmpickle::{CallLimits, ErrorKind, Limits};

use crate::support::*;

#[test]
fn echo_round_trips_args_and_env() {
    let rt = runtime();
    let code = abi_code();
    let call = code
        .closure("echo", &"captured")
        .unwrap()
        .call(&(1, "two", 3.5))
        .unwrap();
    let out = rt.run(&call).unwrap();
    let back: (u8, String, f64) = out.decode().unwrap();
    assert_eq!(back, (1, "two".into(), 3.5));
    assert!(out.fuel_used() > 0);
    let env = code.closure("env", &"captured").unwrap().call(&()).unwrap();
    assert_eq!(
        rt.run(&env).unwrap().decode::<String>().unwrap(),
        "captured"
    );
}

#[test]
fn out_of_fuel_then_a_normal_call() {
    let rt = runtime_with(*Limits::new().fuel(1_000_000));
    let code = abi_code();
    let err = rt
        .run(&code.function("spin").unwrap().call(&()).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfFuel, "{err}");
    assert_eq!(err.fuel_used(), Some(1_000_000));
    rt.run(&code.function("echo").unwrap().call(&(1,)).unwrap())
        .unwrap();
}

#[test]
fn deadline() {
    let rt = runtime_with(
        *Limits::new()
            .fuel(u64::MAX)
            .deadline(Duration::from_millis(50)),
    );
    let code = abi_code();
    let err = rt
        .run(&code.function("spin").unwrap().call(&()).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deadline, "{err}");
}

#[test]
fn memory_limit() {
    let rt = runtime_with(*Limits::new().max_memory(4 << 20));
    let code = abi_code();
    let err = rt
        .run(&code.function("grow").unwrap().call(&()).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit, "{err}");
    // A call may ask for less memory, not more.
    let call = code
        .function("grow")
        .unwrap()
        .call(&())
        .unwrap()
        .with_limits(CallLimits::new().with_max_memory(1 << 30));
    let err = rt.run(&call).unwrap_err();
    assert!(err.to_string().contains("limit 4194304"), "{err}");
}

#[test]
fn trap_and_abi_violation() {
    let rt = runtime();
    let code = abi_code();
    let err = rt
        .run(&code.function("trap").unwrap().call(&()).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap, "{err}");
    assert!(err.wasm_backtrace().is_some());
    let err = rt
        .run(&code.function("oob").unwrap().call(&()).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AbiViolation, "{err}");
    println!("{err}\n{:?}", err.wasm_backtrace());
}
