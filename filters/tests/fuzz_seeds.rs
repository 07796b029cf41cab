//! The fuzz seed corpus stays meaningful: the valid seeds compile, the error seed is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (helpers included)

use std::collections::BTreeMap;

use heptap_filters::{AddressGroups, Routes, Source};

fn seed(name: &str) -> String {
    let path = format!(
        "{}/fuzz/corpus/route_parser/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The groups the fuzz target compiles against.
fn groups() -> AddressGroups {
    let mut table = BTreeMap::new();
    table.insert(
        "1".to_owned(),
        vec![
            "10.10.10.0/24".parse().unwrap(),
            "192.0.2.10/32".parse().unwrap(),
        ],
    );
    table.insert(
        "trusted".to_owned(),
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
    );
    AddressGroups::new(&table)
}

fn compile(text: &str) -> Result<Routes, heptap_filters::CompileErrors> {
    let (first, second) = text.split_once('\0').unwrap_or((text, ""));
    Routes::compile(
        &[Source::new("a.cfg", first), Source::new("inline", second)],
        &groups(),
    )
}

#[test]
fn valid_seeds_compile() {
    for name in [
        "seed-tutorial-si",
        "seed-tutorial-check-source-address",
        "seed-every-construct",
        "seed-two-sources",
    ] {
        if let Err(errors) = compile(&seed(name)) {
            panic!("{name} does not compile:\n{errors}");
        }
    }
}

#[test]
fn the_error_seed_is_refused_with_many_errors() {
    let errors = compile(&seed("seed-errors")).unwrap_err();
    assert!(errors.0.len() >= 3, "{errors}");
}
