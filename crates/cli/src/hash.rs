//! `wasmpickle hash`: a module's code hash, and its pickled exports with their versions.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::stdio;

/// Print a module's canonical code hash and every pickled export's version.
///
/// The first line is the hash (`sha256:<hex>`), the address pickles name the module by; then
/// one line per pickled export: its name, its version and the signature the module describes
/// it with, if any. An export's version is the hash of the module shaken down to what the
/// export can reach: it changes when any code the export can run changes, and stays when
/// only other exports' code does, so a cache of the export's results can key on it.
/// `--json` prints {"hash": "sha256:…", "exports": [{"name", "signature", "doc", "version"}]}
/// instead.
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
    version: String,
}

impl Hash {
    /// Hashes the module and prints the hash and exports.
    ///
    /// # Errors
    ///
    /// When the module cannot be read or is not valid WebAssembly.
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        let code = stdio::load_module(&self.module)?;
        let versions = code
            .export_versions()
            .with_context(|| format!("cannot version the exports of {}", self.module.display()))?;
        let report = Report {
            hash: code.hash().to_string(),
            exports: versions
                .into_iter()
                .map(|(name, version)| {
                    let d = code.description(&name);
                    ExportEntry {
                        signature: d.map(|d| d.signature()),
                        doc: d.map(|d| d.doc.clone()).filter(|d| !d.is_empty()),
                        version: version.to_string(),
                        name,
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
                // The version has a fixed width, so it goes before the signature.
                match &e.signature {
                    Some(sig) => writeln!(out, "{:<width$}  {}  {sig}", e.name, e.version).unwrap(),
                    None => writeln!(out, "{:<width$}  {}", e.name, e.version).unwrap(),
                }
            }
            out
        };
        stdio::write_stdout(out.as_bytes()).context("cannot write to stdout")
    }
}
