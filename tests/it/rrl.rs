//! Response-rate limiting (S1.7) against the real binary over loopback UDP: the rate per
//! client network, slip (TC, empty sections, and TCP then answers in full), the exemptions,
//! the metrics, and the amplification a stranger gets from a bounded flood, before and after
//! (figures printed with `--nocapture`).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::support::client::packet;
use crate::support::http::{get, samples};
use crate::support::{Daemon, big_catalog, query_tcp};

/// Loopback is exempt by default; these tests replace the exemption with a network no test
/// client is in, so that 127.0.0.1 is a stranger.
const NOT_LOOPBACK: &str = "192.0.2.0/24";

/// What a flood got back.
#[derive(Debug, Default)]
struct Flood {
    sent: usize,
    sent_bytes: usize,
    full: usize,
    slipped: usize,
    received_bytes: usize,
    largest_reply: usize,
    /// From the first send to the last send.
    elapsed: Duration,
    /// From the first send to the last reply: the window the limit applied over.
    window: Duration,
}

/// Sends `count` copies of `query` from one socket as fast as it can (at most for `within`)
/// while a second thread reads the replies, until none came for 300 ms after the last send.
fn flood(to: SocketAddr, query: &[u8], count: usize, within: Duration) -> Flood {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = socket.set_recv_buffer_size(4 << 20); // as much as the kernel allows: the victim reads all
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let reader = socket.try_clone().unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = std::sync::Arc::clone(&done);
    let started = Instant::now();
    let receiving = std::thread::spawn(move || {
        let mut got = Flood::default();
        let mut buf = vec![0u8; 65535];
        loop {
            match reader.recv(&mut buf) {
                Ok(len) if len >= 12 => {
                    got.received_bytes += len;
                    got.largest_reply = got.largest_reply.max(len);
                    got.window = started.elapsed();
                    let tc = buf[2] & 0x02 != 0;
                    let records = [6, 8, 10].iter().map(|&at| u16::from_be_bytes([buf[at], buf[at + 1]])).sum::<u16>();
                    if tc && records == 0 { got.slipped += 1 } else { got.full += 1 }
                }
                Ok(_) => {}
                Err(_) if sending.load(std::sync::atomic::Ordering::Relaxed) => return got,
                Err(_) => {}
            }
        }
    });
    let (mut sent, mut sent_bytes) = (0, 0);
    while sent < count && started.elapsed() < within {
        if socket.send_to(query, to).is_ok() {
            sent += 1;
            sent_bytes += query.len();
        }
    }
    let elapsed = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = receiving.join().unwrap();
    Flood { sent, sent_bytes, elapsed, ..got }
}

fn metric(d: &Daemon, name: &str) -> f64 {
    samples(&get(d.http(), "/metrics").text()).get(name).copied().unwrap_or(0.0)
}

fn big_srv_query() -> Vec<u8> {
    packet("big.service.consul", RecordType::SRV, Some(4096))
}

#[test]
fn s1_7_a_stranger_gets_the_rate_then_slips_and_drops_and_tcp_still_answers() {
    let d = Daemon::start(
        &big_catalog("big", 40),
        &["--rrl-responses-per-sec", "50", "--rrl-slip", "2", "--rrl-exempt", NOT_LOOPBACK],
    );
    let got = flood(d.addr, &big_srv_query(), 2000, Duration::from_secs(5));
    assert_eq!(got.sent, 2000, "{got:?}");
    let allowed = 50.0 + 50.0 * got.window.as_secs_f64(); // the burst, then the rate
    assert!(got.full >= 50 && (got.full as f64) <= allowed + 2.0, "{got:?} (at most {allowed:.0} full)");
    let limited = got.sent - got.full;
    let slipped_share = got.slipped as f64 / limited as f64;
    assert!((0.45..=0.55).contains(&slipped_share), "every second limited reply slips: {got:?}");
    let dropped = metric(&d, "consul_dns_dns_rate_limited_responses_total{action=\"dropped\"}");
    let slipped = metric(&d, "consul_dns_dns_rate_limited_responses_total{action=\"slipped\"}");
    assert_eq!(slipped as usize, got.slipped, "slips are counted");
    assert_eq!((dropped + slipped) as usize, limited, "every held-back reply is counted");

    let over_tcp = query_tcp(d.addr, "big.service.consul", RecordType::SRV);
    assert_eq!(over_tcp.answers().len(), 40, "TCP is not rate limited: the retry gets everything");
}

#[test]
fn s1_7_exempt_clients_and_off_are_never_limited() {
    let catalog = big_catalog("big", 5);
    let query = big_srv_query();
    let loopback = Daemon::start(&catalog, &["--rrl-responses-per-sec", "10"]);
    let recursing = Daemon::start(
        &catalog,
        &[
            "--rrl-responses-per-sec",
            "10",
            "--rrl-exempt",
            NOT_LOOPBACK,
            "--rrl-exempt-recursion",
            "--allow-recursion",
            "127.0.0.0/8",
        ],
    );
    let off = Daemon::start(&catalog, &["--rrl-responses-per-sec", "0", "--rrl-exempt", NOT_LOOPBACK]);
    for (d, what) in [(&loopback, "loopback, exempt by default"), (&recursing, "allowed to recurse"), (&off, "off")] {
        let got = flood(d.addr, &query, 300, Duration::from_secs(5));
        assert_eq!((got.sent, got.slipped), (300, 0), "{what}: {got:?}");
        assert!(got.full >= 290, "{what}: all answered but what a loaded loopback may lose: {got:?}");
    }
}

/// The figures of issue 13: the worst amplification a stranger gets (the largest reply for
/// the question), and what one client flooding at full speed for 2 s gets back, without and
/// with the default limit.
#[test]
fn s1_7_amplification_of_a_stranger_before_and_after() {
    let catalog = big_catalog("big", 40);
    let query = big_srv_query();
    let mut floods = Vec::new();
    for (label, rate) in [("rrl off", "0"), ("rrl default (1000/s, slip 2)", "1000")] {
        let d = Daemon::start(&catalog, &["--rrl-responses-per-sec", rate, "--rrl-exempt", NOT_LOOPBACK]);
        let got = flood(d.addr, &query, 1_000_000, Duration::from_secs(2));
        let window = got.window.as_secs_f64();
        println!(
            "{label}: {} queries of {} B in {:.2} s -> {} full + {} slipped replies in {window:.2} s, {} B: largest \
             reply {:.1}x the query, all replies {:.2}x the query bytes, {:.0} kB/s to the victim",
            got.sent,
            query.len(),
            got.elapsed.as_secs_f64(),
            got.full,
            got.slipped,
            got.received_bytes,
            got.largest_reply as f64 / query.len() as f64,
            got.received_bytes as f64 / got.sent_bytes as f64,
            got.received_bytes as f64 / window / 1000.0
        );
        floods.push(got);
    }
    let (off, on) = (&floods[0], &floods[1]);
    assert!(off.largest_reply > 20 * query.len(), "the question is worth amplifying: {off:?}");
    assert_eq!(off.slipped, 0, "{off:?}");
    let bound = 1000.0 * (1.0 + on.window.as_secs_f64()); // burst + rate over the window
    assert!((on.full as f64) <= bound + 2.0, "full replies within the limit: {on:?} (bound {bound:.0})");
    let slip_bytes = on.slipped * (query.len() - 11); // header + question: the OPT is gone
    assert!(on.received_bytes <= on.full * on.largest_reply + slip_bytes, "{on:?}");
}
