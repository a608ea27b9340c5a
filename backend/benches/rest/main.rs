//! REST ingestion benchmark: `cargo bench -p pepeunit-backend --bench rest`. Units post batches of values
//! to `POST /api/v1/units/{uuid}/values` flat out; what a device sees.
//!
//! For each target (`PEPEUNIT_BENCH_TARGETS`, `sqlite,postgres` by default) a release `pepeunit` is started
//! fresh with the per-unit REST rate limit off, `PEPEUNIT_BENCH_UNITS` units (each output keeping every
//! value as history for an hour, so a stored value is a last value and a history row) each post batches of
//! `PEPEUNIT_BENCH_BATCH` values, one request at a time per unit, for `PEPEUNIT_BENCH_SECONDS`. Reported:
//! values/s committed (a 200 means committed), request latency p50/p99/max, failed requests, the server's
//! CPU and peak RSS, the load client's CPU and the load average, so a row where the client or the machine
//! was the limit shows it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use common::load::quantile_ms;
use common::report::{count, ms};
use common::server::{Server, Start};
use common::system::{Watch, env_or, load1, usage};

/// One unit's posts: values committed, request latencies (µs), failed requests and the first failure.
#[derive(Default)]
struct Posted {
    values: u64,
    latency: Vec<u32>,
    failed: u64,
    first_error: Option<String>,
}

async fn post_flat_out(
    url: String,
    token: String,
    output: String,
    batch: usize,
    stop: Instant,
) -> Posted {
    let client = reqwest::Client::new();
    let mut out = Posted::default();
    let mut seq = 0u64;
    while Instant::now() < stop {
        let values: Vec<_> = (0..batch)
            .map(|i| json!({ "output": output, "value": (seq + i as u64).to_string() }))
            .collect();
        seq += batch as u64;
        let sent = Instant::now();
        let answer = client
            .post(&url)
            .header("x-auth-token", &token)
            .json(&values)
            .send()
            .await;
        let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
        match answer {
            Ok(response) if response.status().is_success() => {
                out.values += batch as u64;
                out.latency.push(micros);
            }
            Ok(response) => {
                out.failed += 1;
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                out.first_error.get_or_insert(format!("{status}: {body}"));
            }
            Err(error) => {
                out.failed += 1;
                out.first_error.get_or_insert(error.to_string());
            }
        }
    }
    out
}

async fn run() {
    let bin = PathBuf::from(env_or(
        "PEPEUNIT_BENCH_BIN",
        env!("CARGO_BIN_EXE_pepeunit").to_owned(),
    ));
    let seconds = env_or("PEPEUNIT_BENCH_SECONDS", 10u64).max(1);
    let units = env_or("PEPEUNIT_BENCH_UNITS", 20usize).max(1);
    let batch = env_or("PEPEUNIT_BENCH_BATCH", 100usize).max(1);
    let postgres = env_or(
        "PEPEUNIT_BENCH_POSTGRES",
        "postgres://postgres@127.0.0.1:5432".to_owned(),
    );
    let targets = env_or("PEPEUNIT_BENCH_TARGETS", "sqlite,postgres".to_owned());
    println!(
        "REST ingestion: {units} units each post batches of {batch} values flat out (one request at a time per unit) for {seconds} s"
    );
    println!();
    println!(
        "| server | values/s committed | requests/s | request p50 | request p99 | max | failed requests | server CPU | server RSS | client CPU | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for (run, target) in targets.split(',').map(str::trim).enumerate() {
        let on_postgres = match target {
            "sqlite" => false,
            "postgres" | "postgresql" => true,
            other => panic!("PEPEUNIT_BENCH_TARGETS: unknown target {other:?}"),
        };
        let env = vec![
            ("PEPEUNIT_REST_VALUES_RATE".to_owned(), "0".to_owned()),
            (
                "PEPEUNIT_REST_VALUES_MAX_BATCH".to_owned(),
                batch.max(1000).to_string(),
            ),
        ];
        let server = Server::start(Start {
            bin: &bin,
            env: &env,
            postgres: on_postgres.then(|| {
                (
                    postgres.as_str(),
                    format!("pepeunit_bench_rest_{}_{run}", std::process::id()),
                )
            }),
            public_url: None,
        })
        .await;
        let api = Arc::new(server.admin().await);
        let repo = api.firmware(server.dir.path()).await;
        let mut created = Vec::new();
        for i in 0..units {
            created.push(api.create_unit(&repo, format!("rest {i}"), true).await);
        }
        let load = load1();
        let watch = Watch::start(vec![server.pid]);
        let (client_cpu0, _) = usage(std::process::id());
        let started = Instant::now();
        let stop = started + Duration::from_secs(seconds);
        let tasks: Vec<_> = created
            .iter()
            .map(|unit| {
                let url = format!(
                    "http://127.0.0.1:{}/api/v1/units/{}/values",
                    server.http, unit.who.id
                );
                tokio::spawn(post_flat_out(
                    url,
                    unit.who.token.clone().unwrap(),
                    unit.output.clone(),
                    batch,
                    stop,
                ))
            })
            .collect();
        let mut all = Posted::default();
        for task in tasks {
            let posted = task.await.unwrap();
            all.values += posted.values;
            all.failed += posted.failed;
            all.latency.extend(posted.latency);
            if all.first_error.is_none() {
                all.first_error = posted.first_error;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let server_cpu = watch.cpu()[0];
        let client_cpu = (usage(std::process::id()).0 - client_cpu0) / elapsed * 100.0;
        let rss = watch.finish().await[0];
        let requests = all.latency.len() as f64 / elapsed;
        println!(
            "| Pepeunit, {} | {} /s | {} /s | {} | {} | {} | {} | {server_cpu:.0}% | {} MiB | {client_cpu:.0}% | {load} |",
            if on_postgres { "PostgreSQL" } else { "SQLite" },
            count((all.values as f64 / elapsed) as u64),
            count(requests as u64),
            ms(quantile_ms(&mut all.latency, 0.5)),
            ms(quantile_ms(&mut all.latency, 0.99)),
            ms(quantile_ms(&mut all.latency, 1.0)),
            count(all.failed),
            rss / 1024,
        );
        if let Some(error) = all.first_error {
            notes.push(format!("{target}: first failure: {error}"));
        }
        server.stop().await;
    }
    for note in notes {
        println!("\n{note}");
    }
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_or("PEPEUNIT_BENCH_CLIENT_THREADS", 2usize).max(1))
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
