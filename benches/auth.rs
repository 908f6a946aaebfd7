//! The per-publish permission check: `Permissions::may_publish` on an allow-all grant (the
//! rule `>`, what an open or wide token compiles to), for subjects of 2, 4 and 8 tokens.
//! `cargo bench --bench auth` prints ns per check and one `json: ` line per subject.
//! The check runs once per publish when `[auth.jwt]` is on (docs/auth.md), so its cost is a
//! share of the publish path (tuning/results/2026-12-01-auth-overhead.md has the perf share).

use isthmus::auth::Permissions;
use std::hint::black_box;
use std::time::Instant;

const CHECKS: u32 = 5_000_000;
const ROUNDS: usize = 5;

fn main() {
    let permissions = Permissions::allow_all();
    let subjects: [&[u8]; 3] = [
        b"sensors.temp",
        b"devices.device-42.telemetry.temp",
        b"site.eu-west.building-7.floor-3.room-12.device-42.sensor.temperature",
    ];
    for subject in subjects {
        let mut best = f64::MAX;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let mut allowed = 0u32;
            for _ in 0..CHECKS {
                allowed += u32::from(permissions.may_publish(black_box(subject)));
            }
            assert_eq!(allowed, CHECKS);
            best = best.min(start.elapsed().as_nanos() as f64 / f64::from(CHECKS));
        }
        let tokens = subject.split(|b| *b == b'.').count();
        println!("may_publish allow-all, {tokens} tokens ({} B): {best:.1} ns", subject.len());
        println!(
            "json: {{\"bench\":\"auth\",\"check\":\"may_publish\",\"grant\":\"allow-all\",\"tokens\":{tokens},\"bytes\":{},\"ns\":{best:.2}}}",
            subject.len()
        );
    }
}
