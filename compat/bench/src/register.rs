//! register: create PREFIXfirst..first+count-1 by XEP-0077 in-band registration, many in
//! parallel (for servers without a batch import; registration throttles must be off).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;
use tokio::sync::Semaphore;

use crate::{Ctx, client, own_cpu_s, round};

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub first: usize,
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
}

pub async fn run(ctx: Arc<Ctx>, a: Args) -> bool {
    let cpu0 = own_cpu_s();
    let wall0 = Instant::now();
    let limit = Arc::new(Semaphore::new(a.parallel.max(1)));
    let (created, existing, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for i in a.first..a.first + a.count {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (ctx, created, existing, failed) = (
            ctx.clone(),
            created.clone(),
            existing.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // A refused connection or a slow server gets a few more tries.
            let mut result = Err(std::io::Error::other("not tried"));
            for attempt in 0..3 {
                result = client::register(
                    &ctx.target,
                    ctx.source(i + attempt),
                    &ctx.user(i),
                    &ctx.cli.password,
                )
                .await;
                if result.is_ok() {
                    break;
                }
            }
            drop(permit);
            match result {
                Ok(true) => created.fetch_add(1, Ordering::Relaxed),
                Ok(false) => existing.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("register {}: {e}", ctx.user(i));
                    }
                    0
                }
            };
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    ctx.emit(
        "register",
        json!({
            "accounts": a.count,
            "created": created.load(Ordering::Relaxed),
            "existing": existing.load(Ordering::Relaxed),
            "failed": failed,
            "seconds": round(wall0.elapsed().as_secs_f64(), 2),
        }),
        cpu0,
        wall0,
    );
    failed == 0
}
