//! `wasmpickle hash`: a module's code hash and pickled exports.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::stdio;

/// Print a module's canonical code hash and its pickled exports.
///
/// The first line is the hash (`sha256:<hex>`), the address pickles name the module by; then
/// one line per pickled export, with the signature the module describes it with, if any.
/// `--json` prints {"hash": "sha256:…", "exports": [{"name", "signature", "doc"}]} instead.
#[derive(Args, Debug)]
pub(crate) struct Hash {
    /// The WebAssembly module
    #[arg(value_name = "MODULE.wasm")]
    module: PathBuf,

    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    hash: String,
    exports: Vec<ExportEntry>,
}

#[derive(Serialize)]
struct ExportEntry {
    name: String,
    signature: Option<String>,
    doc: Option<String>,
}

impl Hash {
    /// Hashes the module and prints the hash and exports.
    ///
    /// # Errors
    ///
    /// When the module cannot be read or is not valid WebAssembly.
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        let code = stdio::load_module(&self.module)?;
        let report = Report {
            hash: code.hash().to_string(),
            exports: code
                .exports()
                .iter()
                .filter(|e| e.pickled)
                .map(|e| {
                    let d = code.description(&e.name);
                    ExportEntry {
                        name: e.name.clone(),
                        signature: d.map(|d| d.signature()),
                        doc: d.map(|d| d.doc.clone()).filter(|d| !d.is_empty()),
                    }
                })
                .collect(),
        };
        let out = if self.json {
            let mut line = serde_json::to_string(&report).expect("the report serializes");
            line.push('\n');
            line
        } else {
            let width = report
                .exports
                .iter()
                .map(|e| e.name.len())
                .max()
                .unwrap_or(0);
            let mut out = format!("{}\n", report.hash);
            for e in &report.exports {
                match &e.signature {
                    Some(sig) => writeln!(out, "{:<width$}  {sig}", e.name).unwrap(),
                    None => writeln!(out, "{}", e.name).unwrap(),
                }
            }
            out
        };
        stdio::write_stdout(out.as_bytes()).context("cannot write to stdout")
    }
}
