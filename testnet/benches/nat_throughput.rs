//! Throughput of one artifact over a hole-punched direct connection against the same
//! fetch from the anchor (issue 18's "transfer throughput for the same artifact over a
//! direct connection and from the anchor"), with raw TCP over both paths as the floor,
//! all measured in one run.
//!
//! Topology ([`NatSwarm`]): an anchor on the "internet" bridge, laptops 1 and 2 behind
//! two cone NAT routers that drop unsolicited packets. For each round, laptop 1 and the
//! anchor each `rdht put` their own artifact of `SIZE` bytes (incompressible), and
//! laptop 2 times `rdht get` of each (wall time, CLI to files in place). A small warm-up
//! get from each first makes laptop 2's connection to laptop 1 direct (hole punched:
//! the bench fails if it is not) and to the anchor open. Raw TCP sends the same bytes
//! anchor → laptop 2 and laptop 1 → laptop 2 (through a port forward on router 1, the
//! path a punched connection takes), each receiver timing until the last byte.
//!
//! Run as root after building release binaries (it needs `ip` and `iptables`):
//! `cargo build --release --bins && cargo bench -p rdht-testnet --bench nat_throughput`
//! (`RDHT_BIN_DIR` picks other binaries). It re-runs itself inside namespaces as the
//! raw TCP sender and receiver (`--tcp-send`, `--tcp-recv`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdht_testnet::natswarm::{NatSwarm, peer_id};
use rdht_testnet::netns::NatKind;

/// Bytes per artifact and per raw TCP transfer.
const SIZE: usize = 32 << 20;
/// Rounds; the median of each figure is reported.
const ROUNDS: usize = 3;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--tcp-send") => return tcp_send(&args[2], args[3].parse()?),
        Some("--tcp-recv") => return tcp_recv(&args[2], args[3].parse()?),
        _ => {}
    }
    let t = NatSwarm::new(&[NatKind::Cone, NatKind::Cone]);
    let laptop2 = &t.laptops[1];
    let mut seq = 0;
    let mut put_get = |on: &rdht_testnet::Node, size: usize| -> anyhow::Result<Duration> {
        seq += 1;
        let src = t.tmp.path().join(format!("src{seq}"));
        std::fs::create_dir_all(&src)?;
        std::fs::write(
            src.join("big.bin"),
            rdht_testnet::content(&format!("bench{seq}"), size),
        )?;
        let put = on.json(&["put", src.to_str().unwrap_or_default()]);
        let root = put["root"].as_str().unwrap_or_default().to_string();
        let (out, took) = t.get(laptop2, &root, &format!("dest{seq}"));
        anyhow::ensure!(
            out.status.success(),
            "get failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    };
    // Warm-up: punch the hole to laptop 1 (a missed simultaneous open is retried by a
    // second get, as in tests/nat.rs) and open the connection to the anchor.
    let warm_direct =
        put_get(&t.laptops[0], 64 << 10).or_else(|_| put_get(&t.laptops[0], 64 << 10))?;
    let peer1 = peer_id(&t.laptops[0]);
    let conns = laptop2.json(&["peers"]);
    let direct = conns
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["peer_id"] == peer1.as_str() && p["connection"] == "direct");
    anyhow::ensure!(direct, "no direct connection to laptop 1: {conns}");
    put_get(&t.anchor, 64 << 10)?;
    println!(
        "warm-up: first get from laptop 1 (lookup, relay, hole punch, 64 KiB) took {warm_direct:?}"
    );

    let net = &t.net;
    let mut rows: Vec<[f64; 4]> = Vec::new();
    for round in 1..=ROUNDS {
        let direct = put_get(&t.laptops[0], SIZE)?;
        let anchor = put_get(&t.anchor, SIZE)?;
        let tcp_anchor = raw_tcp(&net.public_ns(1), &net.public_addr(1), None, net)?;
        let tcp_direct = raw_tcp(
            &net.lan_ns(1),
            &net.router_addr(1),
            Some((net.router_ns(1), net.lan_addr(1))),
            net,
        )?;
        let row = [direct, anchor, tcp_direct, tcp_anchor].map(mib_s);
        println!(
            "round {round}: rdht direct {:.0} MiB/s, rdht from anchor {:.0} MiB/s, raw TCP \
             direct path {:.0} MiB/s, raw TCP from anchor {:.0} MiB/s",
            row[0], row[1], row[2], row[3]
        );
        rows.push(row);
    }
    let med = |i: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (direct, anchor, tcp_direct, tcp_anchor) = (med(0), med(1), med(2), med(3));
    println!(
        "median of {ROUNDS} rounds, {} MiB each: rdht over the hole-punched connection \
         {direct:.0} MiB/s, from the anchor {anchor:.0} MiB/s: direct/anchor = {:.2}",
        SIZE >> 20,
        direct / anchor
    );
    println!(
        "floor (raw TCP, same paths): direct path {tcp_direct:.0} MiB/s, from the anchor \
         {tcp_anchor:.0} MiB/s; rdht/raw = {:.2} direct, {:.2} from the anchor",
        direct / tcp_direct,
        anchor / tcp_anchor
    );
    Ok(())
}

fn mib_s(d: Duration) -> f64 {
    SIZE as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// Raw TCP: a sender in namespace `send_ns` listening on all addresses, reached by a
/// receiver in laptop 2's namespace at `host` (through a port forward from router
/// namespace `forward.0` to `forward.1` when given). Returns the receiver's time.
fn raw_tcp(
    send_ns: &str,
    host: &str,
    forward: Option<(String, String)>,
    net: &rdht_testnet::netns::NatNet,
) -> anyhow::Result<Duration> {
    let exe = std::env::current_exe()?;
    let mut sender = Command::new("ip")
        .args(["netns", "exec", send_ns])
        .arg(&exe)
        .args(["--tcp-send", "0.0.0.0:0", &SIZE.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(
        sender
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .read_line(&mut line)?;
    let port = line.trim().to_string();
    let rule = forward.map(|(router, lan)| {
        let spec = [
            "PREROUTING",
            "-i",
            "wan0",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{lan}:{port}"),
        ]
        .map(String::from);
        (router, spec)
    });
    if let Some((router, spec)) = &rule {
        iptables(router, "-A", spec)?;
    }
    let out = Command::new("ip")
        .args(["netns", "exec", &net.lan_ns(2)])
        .arg(&exe)
        .args(["--tcp-recv", &format!("{host}:{port}"), &SIZE.to_string()])
        .output()?;
    if let Some((router, spec)) = &rule {
        iptables(router, "-D", spec)?;
    }
    let _ = sender.wait();
    anyhow::ensure!(out.status.success(), "raw TCP receiver: {out:?}");
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(Duration::from_secs_f64(secs))
}

fn iptables(ns: &str, op: &str, spec: &[String]) -> anyhow::Result<()> {
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-t", "nat", op])
        .args(spec)
        .status()?;
    anyhow::ensure!(st.success(), "iptables {op} {spec:?} in {ns}");
    Ok(())
}

/// `--tcp-send ADDR LEN`: listens, prints the port, sends `LEN` bytes to the first
/// connection.
fn tcp_send(addr: &str, len: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut s, _) = listener.accept()?;
    let chunk = rdht_testnet::content("tcp", 1 << 20);
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    Ok(())
}

/// `--tcp-recv ADDR LEN`: connects, reads `LEN` bytes, prints the seconds it took.
fn tcp_recv(addr: &str, len: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < len {
        let n = s.read(&mut buf)?;
        anyhow::ensure!(n > 0, "closed after {got} bytes");
        got += n;
    }
    println!("{}", start.elapsed().as_secs_f64());
    Ok(())
}
