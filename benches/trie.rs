//! Cost of the router's subject trie at IoT scale, as JSON lines: match (literal subjects
//! against literal and wildcard-heavy subscription sets), insert and remove on a full trie, the
//! shard's cached match path in front of it, and heap bytes per subscription (trie, local
//! router, replicated interest map).
//!
//! `cargo bench --bench trie` (release profile) runs 10k, 100k and 1M subscriptions; each timed
//! figure is the median of 7 runs. `BENCH_QUICK=1` runs 1k and 10k once (CI smoke).
//!
//! Subjects look like a device fleet, 100 devices per site: `site.<s>.device.<d>.temp`. The
//! literal set is one filter per device. The wildcard-heavy set gives each device one filter of
//! four shapes in turn (`site.S.device.D.temp`, `site.S.device.D.*`, `site.S.device.D.>`,
//! `site.S.*.D.temp`) and adds two fleet-wide ones (`site.*.device.*.temp`, `site.>`), so a match
//! walks the `*` and `>` branches at every level and each device's subject matches exactly three
//! filters. Subscriptions hold `u32` ids, as `LocalRouter` stores them.
//!
//! Memory comes from a counting global allocator wrapped around mimalloc (the broker's
//! allocator): live bytes requested before and after building, so allocator slack per block is
//! not in it. Timings on the shared 2-core VM are noisy: compare within one run only.

mod common;

use bytes::Bytes;
use common::report;
use isthmus::limits::MATCH_CACHE_ENTRIES_MAX;
use isthmus::router::interest::InterestMap;
use isthmus::router::local::{LocalMatch, LocalRouter, Subscription};
use isthmus::router::trie::Trie;
use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

/// Devices per site in every generated subject.
const DEVICES_PER_SITE: usize = 100;

/// Subjects per timed call of a match bench, picked at random over the whole set so the walk
/// touches cold memory as a fleet of distinct publishers does. Their paths (about 8 MB at
/// 10,000 subjects) do not fit this VM's 4 MiB L2; with 1,000 they did, and a match among 1M
/// subscriptions measured 0.3 us instead of 2.1 us (tuning/results/2026-12-01-trie.md).
const MATCH_SUBJECTS: usize = 10_000;

/// Filters per timed call of the insert and remove benches.
const CHURN_BATCH: usize = 1000;

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runs = if quick { 1 } else { 7 };
    let sizes: &[usize] = if quick { &[1_000, 10_000] } else { &[10_000, 100_000, 1_000_000] };

    for &subscriptions in sizes {
        for shape in [Shape::Literal, Shape::Wildcard] {
            bench_trie(shape, subscriptions, runs);
        }
        bench_local_router(subscriptions, runs);
        bench_interest_map(subscriptions);
    }
}

/// Which subscription set a trie holds.
#[derive(Clone, Copy)]
enum Shape {
    /// One literal filter per device.
    Literal,
    /// Four filter shapes over the devices, plus two fleet-wide wildcards.
    Wildcard,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Literal => "literal",
            Shape::Wildcard => "wildcard",
        }
    }

    /// Writes the filter of device `device` into `out`.
    fn filter(self, device: usize, out: &mut String) {
        out.clear();
        let (site, number) = (device / DEVICES_PER_SITE, device % DEVICES_PER_SITE);
        let written = match (self, device % 4) {
            (Shape::Literal, _) | (Shape::Wildcard, 0) => {
                write!(out, "site.{site}.device.{number}.temp")
            }
            (Shape::Wildcard, 1) => write!(out, "site.{site}.device.{number}.*"),
            (Shape::Wildcard, 2) => write!(out, "site.{site}.device.{number}.>"),
            (Shape::Wildcard, _) => write!(out, "site.{site}.*.{number}.temp"),
        };
        written.expect("writing to a String cannot fail");
    }

    /// Filters that are in the set once, whatever its size.
    fn fleet_filters(self) -> &'static [&'static str] {
        match self {
            Shape::Literal => &[],
            Shape::Wildcard => &["site.*.device.*.temp", "site.>"],
        }
    }

    /// How many values a device's `temp` subject matches.
    fn matches_per_subject(self) -> usize {
        1 + self.fleet_filters().len()
    }
}

fn bench_trie(shape: Shape, subscriptions: usize, runs: usize) {
    let name = shape.name();
    let mut filter = String::new();
    let (mut trie, built) = measure_heap(|| {
        let mut trie: Trie<u32> = Trie::default();
        for device in 0..subscriptions {
            shape.filter(device, &mut filter);
            trie.values_mut(filter.as_bytes()).push(device as u32);
        }
        for (i, fleet) in shape.fleet_filters().iter().enumerate() {
            trie.values_mut(fleet.as_bytes()).push(u32::MAX - i as u32);
        }
        trie
    });
    built.print(&format!("trie_build_{name}_{subscriptions}"), subscriptions);

    let hits = random_subjects(subscriptions, "temp");
    let expected = shape.matches_per_subject();
    report(&format!("trie_match_{name}_hit_{subscriptions}"), runs, hits.len(), || {
        for subject in &hits {
            let mut found = 0;
            trie.for_each_match(subject.as_bytes(), |_| found += 1);
            assert_eq!(found, expected, "{subject}");
        }
    });

    // A metric nobody subscribed to by name: the literal set has no match, the wildcard set
    // still matches the `.*`/`.>` device filters and `site.>`.
    let misses = random_subjects(subscriptions, "battery");
    report(&format!("trie_match_{name}_other_metric_{subscriptions}"), runs, misses.len(), || {
        for subject in &misses {
            let mut found = 0;
            trie.for_each_match(subject.as_bytes(), |_| found += 1);
            black_box(found);
        }
    });

    // Devices beyond the set arrive and leave in batches, as after a reconnect storm; the
    // trie grows by at most (runs + 1) batches.
    let mut next = subscriptions;
    report(&format!("trie_insert_{name}_{subscriptions}"), runs, CHURN_BATCH, || {
        for device in next..next + CHURN_BATCH {
            shape.filter(device, &mut filter);
            trie.values_mut(filter.as_bytes()).push(device as u32);
        }
        next += CHURN_BATCH;
    });
    let mut gone = subscriptions;
    report(&format!("trie_remove_{name}_{subscriptions}"), runs, CHURN_BATCH, || {
        for device in gone..gone + CHURN_BATCH {
            shape.filter(device, &mut filter);
            // What `LocalRouter::unsubscribe` does.
            let values = trie.values_mut(filter.as_bytes());
            values.retain(|v| *v != device as u32);
            if values.is_empty() {
                trie.prune(filter.as_bytes());
            }
        }
        gone += CHURN_BATCH;
    });
    assert_eq!(next, gone, "every inserted batch was removed");
    black_box(&trie);
}

/// The shard's path: `LocalRouter::matches` with its bounded match cache, for a publisher
/// working set that fits the cache and for one that does not (every device publishing its own
/// subject).
fn bench_local_router(subscriptions: usize, runs: usize) {
    let (mut router, built) = measure_heap(|| {
        let mut router = LocalRouter::default();
        let mut filter = String::new();
        for device in 0..subscriptions {
            Shape::Literal.filter(device, &mut filter);
            router.subscribe(Subscription {
                conn: device as u32,
                sid: Bytes::from_static(b"1"),
                subject: Bytes::copy_from_slice(filter.as_bytes()),
                queue: Bytes::new(),
                max: None,
                delivered: 0,
                mqtt: None,
                deny_filter: false,
            });
        }
        router
    });
    built.print(&format!("local_router_build_{subscriptions}"), subscriptions);

    let hot: Vec<String> = random_subjects(subscriptions, "temp").into_iter().take(100).collect();
    let rounds = MATCH_SUBJECTS / hot.len();
    report(&format!("local_match_cached_hot100_{subscriptions}"), runs, MATCH_SUBJECTS, || {
        for _ in 0..rounds {
            for subject in &hot {
                black_box(router.matches(subject.as_bytes()));
            }
        }
    });

    // Twice the cache bound, cycled: the cache fills, is cleared, fills again.
    let working_set = (MATCH_CACHE_ENTRIES_MAX * 2).min(subscriptions);
    let mut subject = String::new();
    let wide: Vec<String> = (0..working_set)
        .map(|device| {
            Shape::Literal.filter(device * (subscriptions / working_set), &mut subject);
            subject.clone()
        })
        .collect();
    report(
        &format!("local_match_working_set_{working_set}_{subscriptions}"),
        runs,
        wide.len(),
        || {
            for subject in &wide {
                black_box(router.matches(subject.as_bytes()));
            }
        },
    );
    drop(router);

    // The same misses without the cache: what `LocalRouter::matches` computes on a miss (trie
    // walk, each match's queue read from its subscription, the result built), so the
    // difference to the line above is what the cache adds when it cannot hold the working set.
    let mut trie: Trie<u32> = Trie::default();
    let mut queues: Vec<Bytes> = Vec::with_capacity(subscriptions);
    let mut filter = String::new();
    for device in 0..subscriptions {
        Shape::Literal.filter(device, &mut filter);
        trie.values_mut(filter.as_bytes()).push(device as u32);
        queues.push(Bytes::new());
    }
    report(
        &format!("local_match_uncached_working_set_{working_set}_{subscriptions}"),
        runs,
        wide.len(),
        || {
            for subject in &wide {
                let mut found = LocalMatch::default();
                trie.for_each_match(subject.as_bytes(), |id| {
                    let queue = &queues[*id as usize];
                    if queue.is_empty() {
                        found.plain.push(*id);
                    } else {
                        found.queues.push((queue.clone(), vec![*id]));
                    }
                });
                black_box(std::rc::Rc::new(found));
            }
        },
    );
}

/// Heap of the replicated interest map for the same fleet: every shard holds a copy, so a
/// subscription costs this once per shard on top of its `LocalRouter` entry.
fn bench_interest_map(subscriptions: usize) {
    const SHARDS: usize = 2;
    let none = Bytes::new();
    let (map, built) = measure_heap(|| {
        let mut map = InterestMap::new(SHARDS);
        let mut filter = String::new();
        for device in 0..subscriptions {
            Shape::Literal.filter(device, &mut filter);
            map.set(device % SHARDS, &Bytes::copy_from_slice(filter.as_bytes()), &none, 1);
        }
        map
    });
    built.print(&format!("interest_map_build_{SHARDS}_shards_{subscriptions}"), subscriptions);
    black_box(&map);
}

/// `MATCH_SUBJECTS` subjects `site.S.device.D.<metric>` of devices picked at random (fixed seed)
/// among `devices`.
fn random_subjects(devices: usize, metric: &str) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(0x7472_6965);
    (0..MATCH_SUBJECTS)
        .map(|_| {
            let device = rng.usize(..devices);
            let (site, number) = (device / DEVICES_PER_SITE, device % DEVICES_PER_SITE);
            format!("site.{site}.device.{number}.{metric}")
        })
        .collect()
}

/// What building a structure cost.
struct Built {
    bytes: i64,
    allocations: i64,
    nanos: u128,
}

impl Built {
    fn print(&self, name: &str, subscriptions: usize) {
        let per = subscriptions as f64;
        println!(
            "{{\"bench\":\"{name}\",\"subscriptions\":{subscriptions},\"heap_bytes\":{},\
             \"bytes_per_subscription\":{:.1},\"allocations_per_subscription\":{:.2},\
             \"build_ns_per_subscription\":{:.1}}}",
            self.bytes,
            self.bytes as f64 / per,
            self.allocations as f64 / per,
            self.nanos as f64 / per,
        );
    }
}

/// Runs `build` once and returns what it built with the live heap it added and its time.
fn measure_heap<T>(build: impl FnOnce() -> T) -> (T, Built) {
    let (bytes, allocations) = live();
    let start = Instant::now();
    let built = build();
    let nanos = start.elapsed().as_nanos();
    let (bytes_after, allocations_after) = live();
    (
        built,
        Built { bytes: bytes_after - bytes, allocations: allocations_after - allocations, nanos },
    )
}

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCATIONS: AtomicI64 = AtomicI64::new(0);

fn live() -> (i64, i64) {
    (LIVE_BYTES.load(Ordering::Relaxed), LIVE_ALLOCATIONS.load(Ordering::Relaxed))
}

/// mimalloc, counting the bytes and blocks it has handed out and not yet got back.
struct Counting;

// The bench needs a global allocator to count heap bytes; that is an unsafe trait.
#[allow(unsafe_code)]
// SAFETY: every method forwards to mimalloc with the caller's arguments; the counters are
// plain atomics and never affect the pointers returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
