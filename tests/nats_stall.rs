//! Producer stalls with the default `nats.max_pending` (64 MiB): a subscriber that stops
//! reading holds its publisher back once a few MiB are pending for it
//! (`limits::NATS_STALL_BYTES_MAX`), long before the slow-consumer cut, and gets every message
//! once it reads again. Real clients: async-nats publishes, a raw socket subscribes. The stall
//! is read from the in-process broker's counters (isthmus only).

mod common;

use std::time::Duration;

use common::{counter, in_process_toml, nats_options, within, Raw};

const PAYLOAD: usize = 60_000;
/// 12 MB: past the stall cap plus what the kernel's socket buffers absorb, and far below 3/4
/// of the default max_pending (48 MiB), where the producer used to be stalled first.
const MESSAGES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_a_few_mib_behind_stalls_its_publisher_and_loses_nothing() {
    if common::peer() != common::Peer::Isthmus {
        eprintln!("note: in-process isthmus test; skipped with ISTHMUS_TEST_PEER set");
        return;
    }
    let running = in_process_toml(1, "");
    let addr = running.nats_addr().to_string();
    within(Duration::from_secs(60), async {
        let mut slow = Raw::connect_small_rcvbuf(&addr, 4096).await;
        slow.send(b"CONNECT {\"verbose\":false}\r\nSUB stall 1\r\nPING\r\n").await;
        slow.expect_line("PONG", Duration::from_secs(5)).await;

        let publisher = nats_options().connect(addr.as_str()).await.expect("connect");
        let publishing = tokio::spawn(async move {
            let body = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
            for _ in 0..MESSAGES {
                publisher.publish("stall", body.clone()).await.unwrap();
            }
            publisher.flush().await.expect("flush after the stalls");
            publisher
        });

        // The subscriber reads nothing until its publisher has been held back. A stall is
        // counted when its wait ends (at most 100 ms), which may be after the publisher's
        // flush returned: the flush's PING can come in the stalled burst.
        let mut waited = Duration::ZERO;
        while counter(&running, |s| &s.producer_stalls) == 0 {
            assert!(waited < Duration::from_secs(5), "no producer stall in {waited:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += Duration::from_millis(20);
        }
        assert_eq!(counter(&running, |s| &s.slow_consumers), 0);

        for i in 0..MESSAGES {
            let line = slow.expect_line("MSG stall 1 ", Duration::from_secs(10)).await;
            assert_eq!(line, format!("MSG stall 1 {PAYLOAD}"), "message {i}");
            let body = slow.read_exact(PAYLOAD + 2, Duration::from_secs(10)).await;
            assert!(body[..PAYLOAD].iter().all(|&b| b == b'x') && body.ends_with(b"\r\n"));
        }
        let publisher = publishing.await.expect("publisher task");
        publisher.flush().await.expect("publisher unaffected");
        assert_eq!(counter(&running, |s| &s.slow_consumers), 0);
        assert_eq!(counter(&running, |s| &s.dropped_slow_consumer), 0);
    })
    .await;
    running.stop();
}
