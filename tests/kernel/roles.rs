//! Helper roles: this test binary re-executed inside a namespace (`ip netns exec NS <self>
//! __oa_role ROLE …`).
//!
//! - `listen ADDR:PORT…`: real TCP listeners (v6 sockets IPV6_V6ONLY, so `0.0.0.0` and `[::]`
//!   coexist), accepting and closing; prints `ready` once bound; exits on stdin EOF (its parent
//!   died or let go) or after a hard lifetime.
//!   `ADDR:PORT%dev=IFACE` binds the socket to a device (SO_BINDTODEVICE); `ADDR:PORT%full`
//!   listens with backlog 0 and never accepts; `%reuseport` sets SO_REUSEPORT (several such
//!   sockets on one address form a group).
//! - `fill ADDR:PORT…`: fills those listeners' accept queues (connects until one does not
//!   complete), keeps the connections open, prints `filled …`, exits on stdin EOF.
//! - `probe TIMEOUT_MS THREADS`: reads `ID SRC DST PORT` lines on stdin, makes each connect bound
//!   to SRC with the timeout, in parallel, and prints `ID OUTCOME [detail]` lines.
//!
//! Must not: decide anything about expectations; it only reports what the kernel did.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A listener helper never outlives this, even if nobody kills it.
const LISTENER_LIFETIME: Duration = Duration::from_secs(900);

pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("listen") => listen(&args[1..]),
        Some("probe") => probe(&args[1..]),
        Some("fill") => fill(&args[1..]),
        _ => {
            eprintln!("role: expected `listen`, `probe` or `fill`");
            2
        }
    }
}

fn listen(addrs: &[String]) -> i32 {
    let mut socks = vec![];
    let mut held = vec![];
    for a in addrs {
        // `ADDR:PORT[%dev=IFACE][%full][%reuseport]`
        let mut parts = a.split('%');
        let addr = parts.next().unwrap_or("");
        let (mut dev, mut full, mut reuseport) = (None, false, false);
        for o in parts {
            match o.strip_prefix("dev=") {
                Some(d) => dev = Some(d.to_string()),
                None if o == "full" => full = true,
                None if o == "reuseport" => reuseport = true,
                None => {
                    println!("bad listener option {o} in {a}");
                    return 2;
                }
            }
        }
        let sa: SocketAddr = match addr.parse() {
            Ok(s) => s,
            Err(e) => {
                println!("bad address {a}: {e}");
                return 2;
            }
        };
        match bind_listener(sa, dev.as_deref(), full, reuseport) {
            // A full listener is never accepted from: its queue stays full.
            Ok(s) if full => held.push(s),
            Ok(s) => socks.push(s),
            Err(e) => {
                println!("cannot listen on {a}: {e}");
                return 2;
            }
        }
    }
    for s in socks {
        std::thread::spawn(move || {
            // Accept and close at once: the probe only needs the handshake to complete.
            for _ in 0..1_000_000 {
                if s.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        std::thread::sleep(LISTENER_LIFETIME);
        std::process::exit(0);
    });
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(held);
    0
}

fn bind_listener(
    sa: SocketAddr,
    dev: Option<&str>,
    full: bool,
    reuseport: bool,
) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuseport {
        s.set_reuse_port(true)?;
    }
    if sa.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if let Some(d) = dev {
        s.bind_device(Some(d.as_bytes()))?;
    }
    s.bind(&SockAddr::from(sa))?;
    // Backlog 0 keeps at most one connection in the accept queue (sk_acceptq_is_full is
    // `ack_backlog > max_ack_backlog`).
    s.listen(if full { 0 } else { 1024 })?;
    Ok(s)
}

/// Most connections a `fill` makes per address: with backlog 0 the queue holds one, so this
/// bound is never reached unless the kernel keeps taking them (then the helper fails).
const FILL_MAX: usize = 64;

/// `fill ADDR:PORT…`: connect to each address from inside the origin until one connect does not
/// complete within a short timeout (the accept queue is full: the listener's SYNs are
/// dropped), keep every connection open, print `filled N…`, and hold them until stdin EOF.
fn fill(addrs: &[String]) -> i32 {
    let mut held = vec![];
    let mut counts = vec![];
    for a in addrs {
        let sa: SocketAddr = match a.parse() {
            Ok(s) => s,
            Err(e) => {
                println!("bad address {a}: {e}");
                return 2;
            }
        };
        let mut n = 0;
        let mut full = false;
        for _ in 0..FILL_MAX {
            let s = match Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP)) {
                Ok(s) => s,
                Err(e) => {
                    println!("socket: {e}");
                    return 2;
                }
            };
            match s.connect_timeout(&SockAddr::from(sa), Duration::from_millis(700)) {
                Ok(()) => {
                    n += 1;
                    held.push(s);
                }
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        if !full || n == 0 {
            println!("could not fill the accept queue of {sa} ({n} connections completed)");
            return 2;
        }
        counts.push(format!("{sa}={n}"));
    }
    println!("filled {}", counts.join(" "));
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        std::thread::sleep(LISTENER_LIFETIME);
        std::process::exit(0);
    });
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(held);
    0
}

fn probe(args: &[String]) -> i32 {
    let timeout_ms: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let threads: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
        .clamp(1, 64);
    let mut queue = VecDeque::new();
    for line in std::io::stdin().lock().lines().take(100_000) {
        let Ok(line) = line else { break };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 4 {
            continue;
        }
        let (Ok(src), Ok(dst), Ok(port)) = (
            f[1].parse::<IpAddr>(),
            f[2].parse::<IpAddr>(),
            f[3].parse::<u16>(),
        ) else {
            println!("{} error bad-line", f[0]);
            continue;
        };
        queue.push_back((f[0].to_string(), src, SocketAddr::new(dst, port)));
    }
    let queue = Arc::new(Mutex::new(queue));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let timeout = Duration::from_millis(timeout_ms);
    let mut hs = vec![];
    for _ in 0..threads {
        let queue = Arc::clone(&queue);
        let out = Arc::clone(&out);
        hs.push(std::thread::spawn(move || {
            loop {
                let job = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some((id, src, dst)) = job else { break };
                let res = connect_from(src, dst, timeout);
                if let Ok(mut o) = out.lock() {
                    let _ = writeln!(o, "{id} {res}");
                }
            }
        }));
    }
    for h in hs {
        let _ = h.join();
    }
    0
}

/// One bound connect; the outcome word is what the harness compares.
fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> String {
    let s = match Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => return format!("error socket:{e}"),
    };
    if let Err(e) = s.bind(&SockAddr::from(SocketAddr::new(src, 0))) {
        return format!("error bind:{}", e.to_string().replace(' ', "_"));
    }
    match s.connect_timeout(&SockAddr::from(dst), timeout) {
        Ok(()) => "connected".into(),
        Err(e) => {
            // Linux errno values (errno(3)); ICMP port-unreachable also surfaces as ECONNREFUSED.
            let word = match e.raw_os_error() {
                Some(111) => "refused",                 // ECONNREFUSED
                Some(113) | Some(101) => "unreachable", // EHOSTUNREACH, ENETUNREACH
                Some(13) | Some(1) => "unreachable",    // EACCES, EPERM (admin prohibited)
                Some(92) => "unreachable",              // ENOPROTOOPT (ICMP protocol unreachable)
                Some(110) => "timeout",                 // ETIMEDOUT
                _ if e.kind() == std::io::ErrorKind::TimedOut => "timeout",
                _ => return format!("error connect:{}", e.to_string().replace(' ', "_")),
            };
            format!("{word} {}", e.raw_os_error().unwrap_or(0))
        }
    }
}
