//! The per-shard listener. Every shard binds the same address with SO_REUSEPORT (glommio's
//! `TcpListener::bind` sets it) and the kernel spreads new connections across shards.

use super::{conn, mqtt, Shard};
use glommio::net::{TcpListener, TcpStream};
use std::future::Future;
use std::rc::Rc;

/// Accepts NATS connections until shutdown; each connection gets its own tasks.
pub async fn accept_nats(shard: Rc<Shard>, listener: TcpListener) {
    accept(shard, listener, conn::serve_nats).await
}

/// Accepts MQTT connections until shutdown; each is served here or on its home shard.
pub async fn accept_mqtt(shard: Rc<Shard>, listener: TcpListener) {
    accept(shard, listener, mqtt::serve_accepted).await
}

async fn accept<F: Future<Output = ()> + 'static>(
    shard: Rc<Shard>,
    listener: TcpListener,
    serve: fn(Rc<Shard>, TcpStream) -> F,
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            wait_for_shutdown(&shard).await;
            None
        })
        .await;
        match accepted {
            Some(Ok(stream)) => {
                glommio::spawn_local(serve(Rc::clone(&shard), stream)).detach();
            }
            Some(Err(error)) => {
                // EMFILE and friends: back off briefly instead of spinning on the error.
                tracing::warn!(shard = shard.id, %error, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
            None => return,
        }
    }
}

/// Resolves once shutdown was requested (polled: signals arrive on another thread).
pub async fn wait_for_shutdown(shard: &Shard) {
    while !shard.shutting_down() {
        glommio::timer::sleep(std::time::Duration::from_millis(25)).await;
    }
}
