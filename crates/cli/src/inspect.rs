//! `wasmpickle inspect`: show what a pickle holds, without running anything.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use wasmpickle::format::{DecodeLimits, Header, PickleKind};
use wasmpickle::{Call, CallLimits, Closure, Code, CodeRef, SignedCall};

use crate::json;
use crate::key;
use crate::stdio;

/// Environments and arguments larger than this are summarized as `<N bytes>`, not rendered.
const MAX_RENDERED: usize = 1 << 20;

/// Show what a call or closure pickle holds, without running anything.
///
/// The module's exports and imports are listed when its bytes are at hand: inline in the
/// pickle, or in a `--code` file whose hash matches. A signed call is shown as the call it
/// carries, with the id of the key that signed it; its signature is checked only against
/// the `--key` files given, and a signature that does not verify is reported, not an error.
///
/// `--json` prints one object with these fields (absent information is `null`):
///
///   kind            "call" or "closure" (a signed call is a "call")
///   signature       {key_id, verified, error} for a signed call, null otherwise; `verified`
///                   is null without --key, else whether one of the keys verifies it, and
///                   `error` says why not
///   format_version  the pickle's format version
///   call_id         "sha256:…" (calls only)
///   size            the pickle's size in bytes
///   code            {hash, inline, inline_size, module, hash_matches, module_error,
///                    exports, imports}; `module` says where the module bytes came from
///                    ("inline" or "file"), `hash_matches` whether they hash to `hash`;
///                    exports are {name, kind, signature, pickled, description, doc} with
///                    `signature` the core wasm type and `description` the Rust-like
///                    signature the module describes itself with; imports are
///                    {module, name, kind, signature}
///   export          {name, found, signature, description, doc}: the export called
///   env             {size, value, omitted}: `value` is the environment as JSON, or null
///                   with `omitted` saying why (larger than 1 MiB, or not MessagePack)
///   args            like env (calls only)
///   limits          {fuel, deadline_ms, max_memory, max_table_elements} (calls only)
#[derive(Args, Debug)]
#[command(
    verbatim_doc_comment,
    about = "Show what a call or closure pickle holds, without running anything"
)]
pub(crate) struct Inspect {
    /// The pickle (`-` for stdin)
    #[arg(value_name = "PICKLE")]
    pickle: PathBuf,

    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,

    /// A module to show the exports of when the pickle carries its code by hash (repeatable)
    #[arg(long, value_name = "MODULE.wasm")]
    code: Vec<PathBuf>,

    /// Check a signed call's signature against the key in FILE (repeatable)
    #[arg(long, value_name = "FILE")]
    key: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    kind: &'static str,
    format_version: u16,
    call_id: Option<String>,
    signature: Option<SignatureReport>,
    size: usize,
    code: CodeReport,
    export: ExportReport,
    env: Payload,
    args: Option<Payload>,
    limits: Option<LimitsReport>,
}

#[derive(Serialize)]
struct SignatureReport {
    key_id: String,
    verified: Option<bool>,
    error: Option<String>,
}

#[derive(Serialize)]
struct CodeReport {
    hash: String,
    inline: bool,
    inline_size: Option<usize>,
    module: Option<&'static str>,
    hash_matches: Option<bool>,
    module_error: Option<String>,
    exports: Option<Vec<ExportEntry>>,
    imports: Option<Vec<wasmpickle::Import>>,
}

#[derive(Serialize)]
struct ExportEntry {
    name: String,
    kind: &'static str,
    signature: Option<String>,
    pickled: bool,
    description: Option<String>,
    doc: Option<String>,
}

#[derive(Serialize)]
struct ExportReport {
    name: String,
    found: Option<bool>,
    signature: Option<String>,
    description: Option<String>,
    doc: Option<String>,
}

#[derive(Serialize)]
struct Payload {
    size: usize,
    value: Value,
    omitted: Option<String>,
}

#[derive(Serialize)]
struct LimitsReport {
    fuel: Option<u64>,
    deadline_ms: Option<u64>,
    max_memory: Option<u64>,
    max_table_elements: Option<u64>,
}

impl Inspect {
    /// Reads the pickle and prints what it holds.
    ///
    /// # Errors
    ///
    /// When the pickle cannot be read or decoded, or a `--code` module cannot be loaded.
    pub(crate) fn run(&self) -> anyhow::Result<()> {
        let bytes = stdio::read_input(Some(&self.pickle))?;
        let report = self.report(&bytes)?;
        let out = if self.json {
            let mut line = serde_json::to_string(&report).expect("the report serializes");
            line.push('\n');
            line
        } else {
            render(&report)
        };
        stdio::write_stdout(out.as_bytes()).context("cannot write to stdout")
    }

    fn report(&self, bytes: &[u8]) -> anyhow::Result<Report> {
        let header = Header::read(bytes).context("cannot read the pickle's header")?;
        let keys = key::keyring_any(&self.key)?;
        let mut signature = None;
        let (kind, closure, call) = match header.kind {
            PickleKind::Call => {
                let call = Call::from_bytes(bytes).context("cannot decode the call")?;
                ("call", call.closure().clone(), Some(call))
            }
            PickleKind::SignedCall => {
                let signed =
                    SignedCall::from_bytes(bytes).context("cannot decode the signed call")?;
                let call = Call::from_bytes(signed.call_bytes())
                    .context("cannot decode the signed call's call")?;
                let checked = keys
                    .as_ref()
                    .map(|keys| signed.verify(keys, &DecodeLimits::default()));
                signature = Some(SignatureReport {
                    key_id: signed.key_id().to_owned(),
                    verified: checked.as_ref().map(Result::is_ok),
                    error: checked.and_then(Result::err).map(|e| e.to_string()),
                });
                ("call", call.closure().clone(), Some(call))
            }
            PickleKind::Closure => (
                "closure",
                Closure::from_bytes(bytes).context("cannot decode the closure")?,
                None,
            ),
            other => bail!("cannot inspect a pickle of kind {other:?}"),
        };
        let (code, module) = self.code_report(closure.code())?;
        let export = export_report(closure.export(), module.as_ref());
        Ok(Report {
            kind,
            format_version: header.version,
            call_id: call.as_ref().map(|c| c.id().to_string()),
            signature,
            size: bytes.len(),
            code,
            export,
            env: payload(closure.env()),
            args: call.as_ref().map(|c| payload(c.args())),
            limits: call.as_ref().map(|c| limits_report(c.limits())),
        })
    }

    /// What is known about the code, and the module itself when its bytes are at hand.
    fn code_report(&self, code: &CodeRef) -> anyhow::Result<(CodeReport, Option<Code>)> {
        let mut report = CodeReport {
            hash: code.hash().to_string(),
            inline: code.is_inline(),
            inline_size: code.wasm().map(|w| w.len()),
            module: None,
            hash_matches: None,
            module_error: None,
            exports: None,
            imports: None,
        };
        let mut module = None;
        if let Some(wasm) = code.wasm() {
            match Code::new(wasm.clone()) {
                Ok(m) => {
                    report.module = Some("inline");
                    report.hash_matches = Some(m.hash() == code.hash());
                    module = Some(m);
                }
                Err(e) => report.module_error = Some(e.to_string()),
            }
        }
        if module.is_none() {
            for path in &self.code {
                let m = stdio::load_module(path)?;
                if m.hash() == code.hash() {
                    report.module = Some("file");
                    report.hash_matches = Some(true);
                    report.module_error = None;
                    module = Some(m);
                    break;
                }
                tracing::info!(module = %path.display(), code = %m.hash(), "not the pickle's module");
            }
        }
        if let Some(m) = &module {
            report.exports = Some(
                m.exports()
                    .iter()
                    .map(|e| {
                        let description = m.description(&e.name);
                        ExportEntry {
                            name: e.name.clone(),
                            kind: e.kind,
                            signature: e.signature.clone(),
                            pickled: e.pickled,
                            description: description.map(|d| d.signature()),
                            doc: description.map(|d| d.doc.clone()).filter(|d| !d.is_empty()),
                        }
                    })
                    .collect(),
            );
            report.imports = Some(m.imports().to_vec());
        }
        Ok((report, module))
    }
}

fn export_report(name: &str, module: Option<&Code>) -> ExportReport {
    let export = module.and_then(|m| m.exports().iter().find(|e| e.name == name));
    let description = module.and_then(|m| m.description(name));
    ExportReport {
        name: name.to_owned(),
        found: module.map(|_| export.is_some_and(|e| e.pickled)),
        signature: export.and_then(|e| e.signature.clone()),
        description: description.map(|d| d.signature()),
        doc: description.map(|d| d.doc.clone()).filter(|d| !d.is_empty()),
    }
}

fn payload(bytes: &[u8]) -> Payload {
    let (value, omitted) = if bytes.len() > MAX_RENDERED {
        (Value::Null, Some(format!("<{} bytes>", bytes.len())))
    } else {
        match json::from_msgpack(bytes) {
            Ok(v) => (v, None),
            Err(e) => (Value::Null, Some(format!("not MessagePack: {e:#}"))),
        }
    };
    Payload {
        size: bytes.len(),
        value,
        omitted,
    }
}

fn limits_report(limits: &CallLimits) -> LimitsReport {
    LimitsReport {
        fuel: limits.fuel(),
        deadline_ms: limits.deadline_ms(),
        max_memory: limits.max_memory(),
        max_table_elements: limits.max_table_elements(),
    }
}

/// Label column width of the text output.
const LABEL: usize = 10;

/// The text output: one `label  value` row per fact, continuation lines indented.
fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: &str| {
        let _ = writeln!(out, "{label:<LABEL$} {value}");
    };
    row("kind", r.kind);
    row("version", &r.format_version.to_string());
    if let Some(id) = &r.call_id {
        row("call id", id);
    }
    if let Some(sig) = &r.signature {
        let status = match (sig.verified, &sig.error) {
            (Some(true), _) => "verified".to_owned(),
            (Some(false), Some(why)) => format!("NOT verified: {why}"),
            (Some(false), None) => "NOT verified".to_owned(),
            (None, _) => "not checked (pass --key FILE to check it)".to_owned(),
        };
        row("signed", &format!("by key `{}`, {status}", sig.key_id));
    }
    row("size", &format!("{} bytes", r.size));
    let c = &r.code;
    let mut code = c.hash.clone();
    match c.inline_size {
        Some(n) => write!(code, " (inline, {n} bytes)").unwrap(),
        None => code.push_str(" (by reference)"),
    }
    if c.hash_matches == Some(false) {
        code.push_str(" -- the inline module does NOT hash to this");
    }
    row("code", &code);

    let e = &r.export;
    let mut export = e.name.clone();
    if let Some(sig) = &e.signature {
        write!(export, " {sig}").unwrap();
    } else if e.found == Some(false) {
        export.push_str(" (not a pickled export of this module)");
    }
    row("export", &export);
    if let Some(d) = &e.description {
        row("", d);
    }
    for line in e.doc.iter().flat_map(|d| d.lines()) {
        row("", &format!("  {line}"));
    }
    row("env", &render_payload(&r.env));
    if let Some(args) = &r.args {
        row("args", &render_payload(args));
    }
    if let Some(l) = &r.limits {
        let parts: Vec<String> = [
            ("fuel", l.fuel),
            ("deadline_ms", l.deadline_ms),
            ("max_memory", l.max_memory),
            ("max_table_elements", l.max_table_elements),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
        row(
            "limits",
            &if parts.is_empty() {
                "none requested".to_owned()
            } else {
                parts.join(" ")
            },
        );
    }

    match (&c.exports, &c.module_error) {
        (Some(exports), _) => {
            let name_w = exports.iter().map(|e| e.name.len()).max().unwrap_or(0);
            let kind_w = exports.iter().map(|e| e.kind.len()).max().unwrap_or(0);
            let mut label = "exports";
            for x in exports {
                let mut line = format!("{:<name_w$}  {:<kind_w$}", x.name, x.kind);
                if let Some(sig) = &x.signature {
                    write!(line, "  {sig}").unwrap();
                }
                row(label, line.trim_end());
                label = "";
                let indent = " ".repeat(name_w + 2);
                if let Some(d) = &x.description {
                    row("", &format!("{indent}{d}"));
                }
                for doc in x.doc.iter().flat_map(|d| d.lines()) {
                    row("", &format!("{indent}  {doc}"));
                }
            }
            if exports.is_empty() {
                row("exports", "none");
            }
        }
        (None, Some(err)) => row(
            "exports",
            &format!("unknown: the inline module is invalid: {err}"),
        ),
        (None, None) => row(
            "exports",
            "unknown: the code is by reference; pass --code MODULE.wasm",
        ),
    }
    if let Some(imports) = &c.imports {
        if imports.is_empty() {
            row("imports", "none");
        }
        let mut label = "imports";
        for i in imports {
            let mut line = format!("{}.{} {}", i.module, i.name, i.kind);
            if let Some(sig) = &i.signature {
                write!(line, " {sig}").unwrap();
            }
            row(label, &line);
            label = "";
        }
    }
    out
}

fn render_payload(p: &Payload) -> String {
    match &p.omitted {
        Some(why) => why.clone(),
        None => serde_json::to_string(&p.value).expect("a serde_json::Value always serializes"),
    }
}
