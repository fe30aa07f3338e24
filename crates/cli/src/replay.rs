//! `wasmpickle replay`: run a journal's calls again and verify their results bit for bit.
//!
//! The journal (`run --journal`, `map --journal`) holds each call by hash, the limits and
//! grants it ran under, and the canonical bytes of its result; its code store holds the
//! modules. Replay needs nothing else, so it runs in another process, on another machine,
//! or next year, and any difference is a real one.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use wasmpickle::{
    DirStore, Journal, NotReplayed, RecordedResult, ReplayConfig, ReplayReport,
    replay_with_progress,
};

use crate::json;
use crate::stdio;

const EXIT_CODES: &str = "\
Exit status:
  0  every record replayed gave the recorded result (records skipped because they cannot
     reproduce by nature, such as a recorded deadline, do not count against it)
  1  at least one record diverged: a different value, fuel or failure
  2  a record could not be verified here (its code is missing, the replay itself failed for
     reasons of this machine), the journal could not be read, or a usage error";

/// Run a journal's calls again in fresh sandboxes and verify identical results and fuel.
///
/// Each record runs under the limits and grants it was recorded with. Every divergence is
/// printed with its record index (from 0), the expected and the actual result, and the code
/// hash. Durations are not compared. A progress bar shows on stderr when it is a terminal.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub(crate) struct Replay {
    /// The journal
    #[arg(value_name = "JOURNAL")]
    journal: PathBuf,

    /// The code store the journal's modules are in [default: JOURNAL.store]
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,

    /// Keep compiled modules in DIR (see `run --cache`)
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,

    /// The first record to replay, counting from 0 [default: 0]
    #[arg(long, value_name = "N")]
    from: Option<u64>,

    /// The last record to replay, included [default: the last]
    #[arg(long, value_name = "M")]
    to: Option<u64>,

    /// Print one JSON object with every divergence and the counts instead of text
    #[arg(long)]
    json: bool,
}

impl Replay {
    pub(crate) fn run(&self) -> anyhow::Result<ExitCode> {
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from > to
        {
            eprintln!("error: --from {from} is after --to {to}");
            return Ok(ExitCode::from(2));
        }
        if !self.journal.is_file() {
            anyhow::bail!("journal {} does not exist", self.journal.display());
        }
        let store_dir = self
            .store
            .clone()
            .unwrap_or_else(|| Journal::default_store(&self.journal));
        let store = DirStore::open_existing(&store_dir)
            .with_context(|| format!("cannot open the code store {}", store_dir.display()))?;
        let mut config = ReplayConfig::new();
        config.code_store(Arc::new(store));
        config.range(self.from.unwrap_or(0)..=self.to.unwrap_or(u64::MAX));
        if let Some(dir) = &self.cache {
            config.compiled_cache(dir);
        }

        let bar = if io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} records  {per_sec}  eta {eta}")
                    .expect("the template is valid"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let report = replay_with_progress(&self.journal, &config, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .with_context(|| format!("cannot replay {}", self.journal.display()))?;
        bar.finish_and_clear();

        let text = if self.json {
            format!("{}\n", to_json(&report))
        } else {
            to_text(&report)
        };
        stdio::write_stdout(text.as_bytes()).context("cannot write to stdout")?;
        Ok(if !report.divergences.is_empty() {
            ExitCode::FAILURE
        } else if !report.unverified.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// A recorded result as JSON: `{"value": ..., "fuel_used": n}` or `{"error": kind,
/// "message": ..., "fuel_used": n}`.
fn result_json(bytes: &[u8]) -> Value {
    match RecordedResult::from_bytes(bytes) {
        Ok(RecordedResult::Returned { value, fuel_used }) => {
            let value = json::from_msgpack(&value).unwrap_or_else(
                |e| json!({ "undecodable": format!("{e:#}"), "msgpack_len": value.len() }),
            );
            json!({ "value": value, "fuel_used": fuel_used })
        }
        Ok(RecordedResult::Failed {
            kind,
            message,
            guest,
            fuel_used,
        }) => {
            let mut v = json!({ "error": kind, "message": message });
            if let Some(g) = guest {
                v["guest"] = serde_json::to_value(g).unwrap_or(Value::Null);
            }
            if let Some(fuel) = fuel_used {
                v["fuel_used"] = json!(fuel);
            }
            v
        }
        Err(e) => json!({ "undecodable": e.to_string() }),
    }
}

fn not_replayed_json(n: &NotReplayed) -> Value {
    json!({
        "index": n.index,
        "code": n.code.map(|c| c.to_string()),
        "export": n.export,
        "reason": n.reason,
    })
}

fn to_json(report: &ReplayReport) -> Value {
    json!({
        "ok": report.is_ok(),
        "records": report.records,
        "replayed": report.replayed,
        "matched": report.matched,
        "divergences": report.divergences.iter().map(|d| json!({
            "index": d.index,
            "code": d.code.to_string(),
            "export": d.export,
            "call": d.call.to_string(),
            "expected": result_json(&d.expected),
            "actual": result_json(&d.actual),
        })).collect::<Vec<_>>(),
        "skipped": report.skipped.iter().map(not_replayed_json).collect::<Vec<_>>(),
        "unverified": report.unverified.iter().map(not_replayed_json).collect::<Vec<_>>(),
        "torn_tail": report.torn_tail.as_ref().map(|t| json!({
            "offset": t.offset,
            "bytes": t.bytes,
            "reason": t.reason,
            "records_follow": t.records_follow,
        })),
    })
}

fn to_text(report: &ReplayReport) -> String {
    let mut out = String::new();
    for d in &report.divergences {
        out.push_str(&format!(
            "record {} diverged: code {}, export `{}`, call {}\n  expected: {}\n  actual:   {}\n",
            d.index,
            d.code,
            d.export,
            d.call,
            result_json(&d.expected),
            result_json(&d.actual),
        ));
    }
    let describe = |n: &NotReplayed| match (&n.code, &n.export) {
        (Some(code), Some(export)) => format!("code {code}, export `{export}`: {}", n.reason),
        _ => n.reason.clone(),
    };
    for n in &report.unverified {
        out.push_str(&format!("record {} unverified: {}\n", n.index, describe(n)));
    }
    for n in &report.skipped {
        out.push_str(&format!("record {} skipped: {}\n", n.index, describe(n)));
    }
    if let Some(t) = &report.torn_tail {
        out.push_str(&format!(
            "the journal ends in a torn tail: {t} (records before it were replayed)\n"
        ));
    }
    let in_range = report.replayed + report.skipped.len() as u64 + report.unverified.len() as u64;
    out.push_str(&format!(
        "{} of {} record{} replayed: {} matched, {} diverged, {} skipped, {} unverified\n",
        in_range,
        report.records,
        if report.records == 1 { "" } else { "s" },
        report.matched,
        report.divergences.len(),
        report.skipped.len(),
        report.unverified.len(),
    ));
    out
}
