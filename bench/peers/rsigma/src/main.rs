//! rsigma-eval over the same events as sisguard (bench/rules_peers).
//!
//! Usage: rsigma-peer RULES_DIR EVENTS_JSONL SECONDS MATCHES_OUT
//! Loads every .yml under RULES_DIR, parses each JSON line of EVENTS_JSONL once (outside
//! the timing), evaluates all events in a loop for at least SECONDS of CPU time, prints
//! `rules=N events=N evaluated=N seconds=S` and writes one `index<TAB>rule id` line per
//! match of the first pass to MATCHES_OUT.
use std::io::Write;

/// CPU seconds of this process (the Python engines are timed the same way).
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

use rsigma_eval::event::JsonEvent;
use rsigma_eval::Engine;
use rsigma_parser::parse_sigma_yaml;

fn yml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("rules dir").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            yml_files(&path, out);
        } else if path.extension().map_or(false, |e| e == "yml") {
            out.push(path);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut files = Vec::new();
    yml_files(std::path::Path::new(&args[1]), &mut files);
    let mut engine = Engine::new();
    let mut failed = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("rule file");
        match parse_sigma_yaml(&text) {
            Ok(collection) => {
                if engine.add_collection(&collection).is_err() {
                    failed += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    let text = std::fs::read_to_string(&args[2]).expect("events file");
    let values: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("event json")).collect();
    let seconds: f64 = args[3].parse().expect("seconds");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args[4]).expect("matches out"));
    for (i, v) in values.iter().enumerate() {
        for m in engine.evaluate(&JsonEvent::borrow(v)) {
            writeln!(out, "{}\t{}", i, m.header.rule_id.clone().unwrap_or_default()).unwrap();
        }
    }
    out.flush().unwrap();
    let start = cpu_seconds();
    let mut evaluated: u64 = 0;
    let mut found: u64 = 0;
    while cpu_seconds() - start < seconds {
        for v in &values {
            found += engine.evaluate(&JsonEvent::borrow(v)).len() as u64;
        }
        evaluated += values.len() as u64;
    }
    let elapsed = cpu_seconds() - start;
    println!("rules={} failed={} events={} evaluated={} matches={} seconds={:.6}",
             engine.rule_count(), failed, values.len(), evaluated, found, elapsed);
}
