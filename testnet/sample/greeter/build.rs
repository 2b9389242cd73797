//! Generates the greeting at build time, as many real build scripts generate code.

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(
        std::path::Path::new(&out).join("greeting.rs"),
        "pub fn greeting() -> &'static str { \"hello from a build script\" }\n",
    )
    .expect("write greeting.rs");
    println!("cargo:rerun-if-changed=build.rs");
}
