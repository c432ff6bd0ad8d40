//! The crate's layers, held to `lib.rs`'s layout: every module uses only
//! modules listed before it there, so no two modules use each other and no
//! circle of imports can form. Read from the source as text (`use crate::x`
//! and `crate::x::` paths outside tests), like the doc a reader follows.

use std::collections::BTreeMap;
use std::path::Path;

/// The top-level modules in the order `lib.rs`'s layout lists them.
fn layout_order(lib: &str) -> Vec<String> {
    let mut order = Vec::new();
    let layout = (lib.lines())
        .take_while(|line| line.starts_with("//!"))
        .skip_while(|line| !line.contains("from the bottom up"));
    for line in layout {
        let mut rest = line;
        while let Some(at) = rest.find("[`") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find("`]") else { break };
            let name = &rest[..end];
            if !name.contains("::")
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !order.iter().any(|known| known == name)
            {
                order.push(name.to_owned());
            }
            rest = &rest[end..];
        }
    }
    order
}

/// The top-level modules each module's code (tests left out) uses.
fn imports(src: &Path) -> BTreeMap<String, Vec<String>> {
    let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut files = vec![src.to_owned()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("src/ reads")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).expect("under src");
        let module = relative.components().next().expect("a file").as_os_str();
        let module = module.to_string_lossy().trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source reads");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let code: String = code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // The labelled! macro lives in kinds.
            let name = if name == "labelled" {
                "kinds".to_owned()
            } else {
                name
            };
            let used = uses.entry(module.clone()).or_default();
            if name != module && !used.contains(&name) {
                used.push(name);
            }
        }
    }
    uses
}

#[test]
fn every_module_uses_only_modules_listed_before_it_in_the_layout() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs reads");
    let order = layout_order(&lib);
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    for module in &declared {
        assert!(
            order.iter().any(|o| o == module),
            "{module} is missing from lib.rs's layout: {order:?}"
        );
    }
    let rank = |name: &str| order.iter().position(|o| o == name);
    let mut upward = Vec::new();
    for (module, used) in imports(&src) {
        let Some(own) = rank(&module) else {
            panic!("{module} is not in lib.rs's layout");
        };
        for name in used {
            match rank(&name) {
                Some(other) if other < own => {}
                // `crate::run` and friends: lib.rs itself, the top.
                None if !declared.contains(&name.as_str()) => {}
                _ => upward.push(format!("{module} -> {name}")),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up the layout ({order:?}): {upward:#?}"
    );
}
