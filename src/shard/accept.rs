//! The per-shard listener. Every shard binds the same address with SO_REUSEPORT (glommio's
//! `TcpListener::bind` sets it) and the kernel spreads new connections across shards.

use super::{conn, mqtt, Shard};
use glommio::net::{TcpListener, TcpStream};
use std::future::Future;
use std::rc::Rc;

/// Accepts NATS connections until its task is dropped; each connection gets its own tasks.
pub async fn accept_nats(shard: Rc<Shard>, listener: TcpListener) {
    accept(shard, listener, conn::serve_nats).await
}

/// Accepts MQTT connections until its task is dropped; each is served here or on its home
/// shard.
pub async fn accept_mqtt(shard: Rc<Shard>, listener: TcpListener) {
    accept(shard, listener, mqtt::serve_accepted).await
}

/// Accepts MQTT-over-TLS connections (`[mqtt.tls]`); the handshake runs in each
/// connection's task, never in the accept loop.
pub async fn accept_mqtt_tls(shard: Rc<Shard>, listener: TcpListener) {
    accept(shard, listener, mqtt::serve_accepted_tls).await
}

/// The accept loop runs in a task of its own that only the listener wakes, and shutdown
/// cancels it by dropping the task. It must not share a task with anything that wakes it
/// periodically: glommio 0.9 keeps one more waker clone on the listener's source at every poll
/// of a pending accept, and a task's waker count is an i16, so a poll every 25 ms overflowed it
/// after about 14 idle minutes and crashed the shard (tuning/results/2026-12-01-mqtt.md).
async fn accept<F: Future<Output = ()> + 'static>(
    shard: Rc<Shard>,
    listener: TcpListener,
    serve: fn(Rc<Shard>, TcpStream) -> F,
) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(Rc::clone(&shard), stream)).detach();
            }
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning on the error.
                tracing::warn!(shard = shard.id, %error, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Resolves once shutdown was requested (polled: signals arrive on another thread).
pub async fn wait_for_shutdown(shard: &Shard) {
    while !shard.shutting_down() {
        glommio::timer::sleep(std::time::Duration::from_millis(25)).await;
    }
}
