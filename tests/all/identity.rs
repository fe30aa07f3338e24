//! A module's hash does not depend on where it was built: the guests carry no absolute path of
//! the machine that built them, and the same guest built in another directory hashes the same.

use std::path::PathBuf;

use wasmpickle::canonical_hash;
use wasmpickle_test_artifacts::{ALL, MATH, MATH_ELSEWHERE, read};

/// Absolute paths of this machine that a build could leak: the checkout, `CARGO_HOME`, the
/// home directory (rustup's toolchains live there).
fn local_paths() -> Vec<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let home = std::env::home_dir();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".cargo")));
    let mut paths = vec![repo];
    paths.extend(cargo_home);
    paths.extend(home);
    // A path this short could occur in any binary by chance ("/a", "/root"); not worth a
    // false alarm.
    paths.retain(|p| p.as_os_str().len() >= 6);
    paths
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn guests_carry_no_absolute_path_of_this_machine() {
    let paths = local_paths();
    assert!(!paths.is_empty());
    for (name, path) in ALL {
        let wasm = read(path);
        for local in &paths {
            let local = local.to_string_lossy();
            assert!(
                !contains(&wasm, local.as_bytes()),
                "{name} ({path}) contains {local}: a panic location or debug path was not remapped \
                 (see crates/test-artifacts/build.rs)"
            );
        }
    }
    // The SDK's panic locations are there, under the remapped root.
    assert!(contains(&read(MATH), b"/wasmpickle/crates/guest/src/"));
}

#[test]
fn the_same_guest_built_in_two_directories_hashes_the_same() {
    assert_eq!(
        canonical_hash(&read(MATH)).unwrap(),
        canonical_hash(&read(MATH_ELSEWHERE)).unwrap()
    );
}
