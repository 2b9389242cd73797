//! The demo's sample program: derives, serialises and greets.

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Build {
    crates: Vec<String>,
    cached: bool,
}

fn main() -> anyhow::Result<()> {
    let build = Build {
        crates: vec!["serde".into(), "anyhow".into(), "greeter".into()],
        cached: true,
    };
    let text = serde_json::to_string(&build).context("serialising")?;
    let back: Build = serde_json::from_str(&text).context("parsing")?;
    assert_eq!(back, build);
    println!("{} {text}", greeter::greeting());
    Ok(())
}
