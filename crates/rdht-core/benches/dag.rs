//! Placeholder replaced by the DAG benchmark in the next commit.
fn main() {}
