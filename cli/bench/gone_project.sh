# Sourced by cli/bench/unreachable.sh and cli/bench/decision_bound.sh.
# make_project DIR NAME: the 22-unit crates.io project of issue 22 (serde+derive,
# serde_json, anyhow, libc), package NAME, at DIR.
make_project() {
    mkdir -p "$1/src"
    cat >"$1/Cargo.toml" <<TOML
[package]
name = "$2"
version = "0.1.0"
edition = "2021"

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
anyhow = "1"
libc = "0.2"
TOML
    cat >"$1/src/main.rs" <<'RS'
#[derive(serde::Serialize)]
struct Out { pid: i32 }
fn main() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(&Out { pid: unsafe { libc::getpid() } })?);
    Ok(())
}
RS
}
