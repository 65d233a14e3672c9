//! The example policies (`policies/examples/`), embedded so an installed `treasury` needs no checkout.

/// Every example script by name.
pub const SCRIPTS: &[(&str, &str)] = &[
    ("payroll", include_str!("../examples/payroll.rhai")),
    ("grant_stream", include_str!("../examples/grant_stream.rhai")),
    ("gas_topup", include_str!("../examples/gas_topup.rhai")),
    ("rebalance", include_str!("../examples/rebalance.rhai")),
    ("dca", include_str!("../examples/dca.rhai")),
    ("derisk", include_str!("../examples/derisk.rhai")),
];

/// The example script called `name`.
pub fn script(name: &str) -> Option<&'static str> {
    SCRIPTS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".rhai").map(str::to_owned))
            .collect();
        files.sort();
        let mut embedded: Vec<String> = SCRIPTS.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(files, embedded);
        assert_eq!(script("dca"), Some(include_str!("../examples/dca.rhai")));
        assert_eq!(script("nope"), None);
    }
}
