use super::*;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

fn node(name: &str, inc: u64) -> NodeId {
    NodeId::new(name, inc).unwrap()
}

fn hello(token: Token) -> Hello {
    Hello { cluster: "vm".into(), from: node("a", 1), to: node("b", 2), token, conn: 9 }
}

#[test]
fn hello_and_welcome_cross_intact() {
    let t = Token([7; TOKEN_LEN]);
    let h = hello(t);
    assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
    let w = Welcome { token: t };
    assert_eq!(Welcome::decode(&w.encode()).unwrap(), w);
    assert!(Hello::decode(&w.encode()).is_err(), "a welcome is not a hello");
    let mut long = h.encode();
    long.push(0);
    assert!(Hello::decode(&long).is_err(), "trailing bytes are refused");
    assert!(Token::fresh().unwrap() != Token::fresh().unwrap(), "tokens are random");
    assert!(!t.matches(&Token([8; TOKEN_LEN])));
}

#[test]
fn frames_split_anywhere_come_out_whole_and_bad_lengths_end_the_stream() {
    let mut r = FrameReader::new(10);
    let stream = [frame(b"abc"), frame(b"0123456789")].concat();
    let mut got = Vec::new();
    for b in &stream {
        r.push(std::slice::from_ref(b));
        while let Some(f) = r.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, vec![Bytes::from_static(b"abc"), Bytes::from_static(b"0123456789")]);
    let mut r = FrameReader::new(10);
    r.push(&11u32.to_le_bytes());
    assert!(r.next_frame().is_err(), "a frame over the limit is refused before its body");
    let mut r = FrameReader::new(10);
    r.push(&0u32.to_le_bytes());
    assert!(r.next_frame().is_err(), "an empty frame is refused");
}

/// A listener that checks every connection's hello, as a node does: hostile clients each cost
/// their own connection an error, never a panic, and the next honest client still gets in.
#[tokio::test]
async fn hostile_clients_cost_one_connection_each() {
    let me = node("b", 2);
    let token = Token::fresh().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = {
        let me = me.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let expect = Expect { cluster: "vm", me: &me, token: &token };
                let r = accept_hello(&mut s, &expect, Duration::from_millis(300)).await;
                tx.send(r.map_err(|e| e.to_string())).unwrap();
            }
        })
    };
    let mut garbage = vec![0u8; 4096];
    let mut x = 0x9e37_79b9_u32;
    for b in &mut garbage {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let wrong = |f: fn(&mut Hello)| {
        let mut h = hello(token);
        h.to = me.clone();
        f(&mut h);
        frame(&h.encode()).to_vec()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", garbage),
        ("a 4 GiB length", u32::MAX.to_le_bytes().to_vec()),
        ("an empty frame", 0u32.to_le_bytes().to_vec()),
        ("a frame that is no hello", frame(b"GET / HTTP/1.1\r\n\r\n").to_vec()),
        ("a truncated hello", wrong(|_| {})[..20].to_vec()),
        ("a wrong token", wrong(|h| h.token = Token([0; TOKEN_LEN]))),
        ("another cluster", wrong(|h| h.cluster = "other".into())),
        ("an old incarnation", wrong(|h| h.to = NodeId::new("b", 1).unwrap())),
        ("silence", Vec::new()),
    ];
    for (what, bytes) in cases {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may close first (a refused length): a failed write is fine.
        let _ = c.write_all(&bytes).await;
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert!(r.is_err(), "{what} was accepted");
        // Its connection is closed (or at least never answered).
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "{what}: the server answered");
    }
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut h = hello(token);
    h.to = me.clone();
    c.write_all(&frame(&h.encode())).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(r.unwrap(), h, "the honest client is let in");
    server.abort();
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz(&bytes);
    }

    #[test]
    fn frames_reassemble_from_any_chunking(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 1..10),
        chunk in 1usize..17,
    ) {
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p).to_vec()).collect();
        let mut r = FrameReader::new(64);
        let mut got = Vec::new();
        for c in stream.chunks(chunk) {
            r.push(c);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        prop_assert_eq!(got, payloads);
    }
}

/// Four threads send numbered frames under one lock (as sessions do) while the reader first
/// stalls, so the socket fills and frames take the queue, partly written ones included; the
/// reader must see every frame, whole, in numbering order. Repeated over rounds, because the
/// hand-over between the direct write and the queue is a race.
#[test]
fn frames_from_many_threads_arrive_whole_and_in_order() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for round in 0..20 {
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let dial = tokio::net::TcpStream::connect(addr);
            let (accepted, dialed) = tokio::join!(listener.accept(), dial);
            let (rx_stream, tx_stream) = (accepted.unwrap().0, Arc::new(dialed.unwrap()));
            let (writer, write_loop) = Writer::new(tx_stream);
            let writing = tokio::spawn(write_loop.run());
            const THREADS: u64 = 4;
            const EACH: u64 = 2_000;
            // Frames of varying size (up to 3 KiB) so that partial writes happen.
            let size = |n: u64| 8 + (n * 7919 % 3000) as usize;
            let numbering = Arc::new(std::sync::Mutex::new((0u64, writer)));
            let senders: Vec<_> = (0..THREADS)
                .map(|_| {
                    let numbering = numbering.clone();
                    std::thread::spawn(move || {
                        for _ in 0..EACH {
                            let mut g = numbering.lock().unwrap();
                            g.0 += 1;
                            let n = g.0;
                            let mut body = vec![(n % 251) as u8; size(n)];
                            body[..8].copy_from_slice(&n.to_le_bytes());
                            g.1.send(&body);
                        }
                    })
                })
                .collect();
            if round % 2 == 0 {
                // Stall the reader so the socket's buffers fill.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut r = FrameReader::new(1 << 16);
            for want in 1..=THREADS * EACH {
                let f = r.read_frame_from(&rx_stream).await.unwrap().expect("a frame");
                let n = u64::from_le_bytes(f[..8].try_into().unwrap());
                assert_eq!(n, want, "round {round}: frames out of order");
                assert_eq!(f.len(), size(n), "round {round}: frame {n} is not whole");
                assert!(f[8..].iter().all(|&b| b == (n % 251) as u8), "round {round}: frame {n} corrupted");
            }
            for s in senders {
                s.join().unwrap();
            }
            drop(numbering);
            // The writer is gone: the loop ends, and the reader sees a clean end.
            writing.await.unwrap().unwrap();
            assert!(r.read_frame_from(&rx_stream).await.unwrap().is_none());
        });
    }
}
