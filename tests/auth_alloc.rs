//! Proof that the permission checks a shard runs per message allocate nothing:
//! `Permissions::may_publish`, `may_subscribe` and `may_deliver` on a grant compiled from a
//! real signed token, under a counting global allocator (counted per thread, so other test
//! threads do not disturb the count).

use isthmus::auth::{Authenticator, Credentials, Protocol, SubscribeCheck};
use isthmus::config::{AuthConfig, JwtConfig, JwtKeyConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn permission_checks_allocate_nothing() {
    let dir = std::env::temp_dir().join(format!("isthmus-auth-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = "0123456789abcdef0123456789abcdef0123456789ab";
    std::fs::write(dir.join("hmac.secret"), format!("{secret}\n")).unwrap();
    let key = JwtKeyConfig {
        algorithms: vec!["HS256".into()],
        secret_file: Some("hmac.secret".into()),
        ..JwtKeyConfig::default()
    };
    let config = AuthConfig {
        allow_anonymous: false,
        jwt: Some(JwtConfig { keys: vec![key], ..JwtConfig::default() }),
    };
    let authenticator = Authenticator::from_config(&config, &dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let now = 1_767_225_600u64;
    let claims = serde_json::json!({
        "sub": "dev1", "exp": now + 3600,
        "isthmus": {
            "pub": { "allow": ["devices.%c.>", "cmd.*.reply", "a.b.c.d.e.>"], "deny": ["devices.%c.secret.>"] },
            "sub": { "allow": ["devices.%c.cmd.>", "broadcast.>"], "deny": ["broadcast.secret.>"] }
        }
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let credentials = Credentials {
        protocol: Protocol::Mqtt,
        token: Some(token.as_bytes()),
        client_id: Some(b"dev1"),
        username: None,
    };
    let grant = authenticator.authenticate(&credentials, now).unwrap();
    let permissions = &grant.permissions;
    let subjects: [&[u8]; 6] = [
        b"devices.dev1.temperature",
        b"devices.dev1.secret.key",
        b"devices.dev2.temperature",
        b"cmd.x.reply",
        b"a.b.c.d.e.f.g.h",
        b"unrelated",
    ];
    let filters: [&[u8]; 4] = [b"devices.dev1.cmd.>", b"broadcast.>", b"broadcast.secret.x", b">"];

    let before = allocations();
    let mut published = 0;
    let mut subscribed = 0;
    let mut delivered = 0;
    for _ in 0..1000 {
        for subject in subjects {
            published += usize::from(permissions.may_publish(subject));
            delivered += usize::from(permissions.may_deliver(subject));
        }
        for filter in filters {
            subscribed += usize::from(permissions.may_subscribe(filter) != SubscribeCheck::Denied);
        }
    }
    let during = allocations() - before;

    assert_eq!(published, 3000, "devices.dev1.temperature, cmd.x.reply, a.b.c.d.e.f.g.h");
    assert_eq!(subscribed, 2000, "devices.dev1.cmd.> and broadcast.>");
    assert_eq!(delivered, 6000);
    assert_eq!(during, 0, "permission checks allocated {during} times");
    // The counter does count: compiling a grant allocates.
    let before = allocations();
    drop(authenticator.authenticate(&credentials, now).unwrap());
    assert!(allocations() > before);
}
