//! `#[export]`: checks the function, then writes the glue around it.
//!
//! The expansion of
//!
//! ```text
//! /// Multiplies by the captured factor.
//! #[export]
//! fn scale(env: Scale, x: f64) -> f64 { env.factor * x }
//! ```
//!
//! is the function itself, unchanged but for `#[env]` helper attributes, followed by an
//! anonymous `const _: () = { ... };` block (so nothing else lands in the caller's namespace)
//! holding:
//!
//! * `__wasmpickle_call(env: &[u8], args: &[u8]) -> Vec<u8>`: decodes the environment and the
//!   argument tuple, calls the function and encodes the reply. It is compiled on every target,
//!   so type errors (a parameter that is not `Deserialize`, an error that is not `Display`)
//!   show up in a native `cargo check`, not only in the wasm build;
//! * on wasm only, the `extern "C"` export `(i32, i32, i32, i32) -> i64` under the export's
//!   name, which hands the host's buffers to `__wasmpickle_call` through the SDK's runtime;
//! * on wasm only, a `#[used]` static in the `wasmpickle.exports` custom section holding the
//!   export's [`ExportDescription`], encoded here at expansion time.
//!
//! Every misuse is a `syn::Error` pointing at the offending tokens. The function is emitted
//! even when it is rejected, so a mistake in the attribute does not cascade into "cannot find
//! function" errors at every call site.
//!
//! The checks and the pieces of glue are `pub(crate)`: `#[object]` (`object.rs`) builds each
//! of an object's exports from them, so its constructor and methods follow the same rules.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, FnArg, GenericParam, ItemFn, Lit, Meta, Pat, ReturnType, Signature, Type,
};
use wasmpickle_format::MAX_EXPORT_NAME;
use wasmpickle_format::abi::{
    ALLOC_EXPORT, ExportDescription, FREE_EXPORT, MEMORY_EXPORT, PANIC_SLOT_EXPORT, Param,
};

use crate::render::type_string;

/// Export names a pickled function may not take: the contract's own exports, the symbols the
/// linker exports from every Rust cdylib, and the `wasmpickle_` prefix, kept for future
/// versions of the contract.
const RESERVED: &[&str] = &[
    MEMORY_EXPORT,
    ALLOC_EXPORT,
    FREE_EXPORT,
    PANIC_SLOT_EXPORT,
    "__heap_base",
    "__data_end",
];
const RESERVED_PREFIX: &str = "wasmpickle_";

/// The arguments of the attribute: `#[export]` or `#[export(name = "...")]` (and the same
/// for `#[object]` and `#[method]`).
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) name: Option<(String, Span)>,
}

impl Args {
    /// Parses `name = "..."`; `placeholder` is what the messages show as the example value
    /// (`export_name`).
    pub(crate) fn parse(tokens: TokenStream, placeholder: &str) -> syn::Result<Args> {
        let mut args = Args::default();
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                if args.name.is_some() {
                    return Err(meta.error("`name` is given twice"));
                }
                if !meta.input.peek(syn::Token![=]) {
                    return Err(meta.error(format!("expected `name = \"{placeholder}\"`")));
                }
                let lit: syn::LitStr = meta.value()?.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        format!("expected a string: `name = \"{placeholder}\"`"),
                    )
                })?;
                args.name = Some((lit.value(), lit.span()));
                Ok(())
            } else {
                let key = meta.path.to_token_stream().to_string().replace(' ', "");
                Err(meta.error(format!(
                    "unknown argument `{key}`; the only argument is `name = \"...\"`"
                )))
            }
        });
        syn::parse::Parser::parse2(parser, tokens)?;
        Ok(args)
    }
}

/// Entry point: the whole expansion, or the item followed by compile errors.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(_) => {
            let err = match syn::parse2::<syn::Item>(item.clone()) {
                Ok(other) => syn::Error::new_spanned(
                    item_head(&other),
                    "#[export] applies to a free function (`fn name(env: Env, ...) -> T`), \
                     not to this item",
                ),
                Err(e) => e,
            };
            let err = err.to_compile_error();
            return quote!(#item #err);
        }
    };
    // Strip `#[env]` before anything else, so even a rejected function is emitted without an
    // attribute rustc does not know.
    let env_marks = strip_env_attrs(&mut func.sig);
    let args = Args::parse(attr, "export_name");
    let fallback = Args::default();
    let checked = check(&func, args.as_ref().unwrap_or(&fallback), &env_marks);
    let errors = match (args, checked) {
        (Ok(_), Ok(plan)) => return generate(&func, &plan),
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        (Err(mut all), Err(more)) => {
            all.combine(more);
            all
        }
    };
    // rustc rejects C-variadic Rust functions with errors of its own; ours says why.
    if func.sig.variadic.take().is_some() {
        // Rebuilding the list drops the comma before the `...`, too.
        func.sig.inputs = func.sig.inputs.iter().cloned().collect();
    }
    let errors = errors.to_compile_error();
    quote!(#func #errors)
}

/// The head of an item (`struct Foo`, `impl Foo`), so an error points at it rather than at
/// the whole body.
pub(crate) fn item_head(item: &syn::Item) -> TokenStream {
    use syn::Item;
    let mut head = TokenStream::new();
    macro_rules! head {
        ($($part:expr),*) => {{ $($part.to_tokens(&mut head);)* }};
    }
    match item {
        Item::Struct(i) => head!(i.struct_token, i.ident),
        Item::Enum(i) => head!(i.enum_token, i.ident),
        Item::Union(i) => head!(i.union_token, i.ident),
        Item::Const(i) => head!(i.const_token, i.ident),
        Item::Static(i) => head!(i.static_token, i.ident),
        Item::Trait(i) => head!(i.trait_token, i.ident),
        Item::Type(i) => head!(i.type_token, i.ident),
        Item::Mod(i) => head!(i.mod_token, i.ident),
        Item::Impl(i) => head!(i.impl_token, i.self_ty),
        Item::Use(i) => head!(i.use_token),
        other => head!(other),
    }
    head
}

/// Removes `#[env]` from every parameter and returns, per parameter, its mark.
pub(crate) fn strip_env_attrs(sig: &mut Signature) -> Vec<Option<Attribute>> {
    sig.inputs
        .iter_mut()
        .map(|arg| {
            let attrs = match arg {
                FnArg::Typed(pat) => &mut pat.attrs,
                FnArg::Receiver(recv) => &mut recv.attrs,
            };
            let mut mark = None;
            attrs.retain(|a| {
                if a.path().is_ident("env") {
                    mark = Some(a.clone());
                    false
                } else {
                    true
                }
            });
            mark
        })
        .collect()
}

/// What the generated glue needs to know about a checked function.
struct Plan {
    export_name: String,
    env: Option<Type>,
    params: Vec<(String, Type)>,
    returns_result: bool,
    description: ExportDescription,
}

/// What a function the macros export is called in their messages, and which attribute wrote
/// its glue: `#[export]` functions, `#[object]` constructors and methods share the checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject {
    /// `an exported function`, as the subject of a sentence.
    pub(crate) noun: &'static str,
    /// `#[export]`.
    pub(crate) attr: &'static str,
}

const EXPORTED_FN: Subject = Subject {
    noun: "an exported function",
    attr: "#[export]",
};

/// Pushes an error for every part of a signature the host cannot call: `async`, `unsafe`,
/// `extern`, generics, a `where` clause and C variadics. Parameters are checked one by one
/// with [`check_param`].
pub(crate) fn check_signature(sig: &Signature, subject: Subject, errors: &mut Vec<syn::Error>) {
    let noun = subject.noun;
    let mut err =
        |tokens: &dyn ToTokens, msg: String| errors.push(syn::Error::new_spanned(tokens, msg));

    if let Some(token) = &sig.asyncness {
        err(
            token,
            format!(
                "{noun} cannot be `async`: the host calls it synchronously; write a plain `fn`"
            ),
        );
    }
    if let syn::Safety::Unsafe(token) = &sig.safety {
        err(
            token,
            format!(
                "{noun} cannot be `unsafe`: the host cannot uphold its safety contract; call \
                 unsafe code from inside a safe `fn` instead"
            ),
        );
    }
    if let Some(abi) = &sig.abi {
        err(
            abi,
            format!(
                "{noun} must use the Rust ABI: remove this `extern`; {} writes the \
                 `extern \"C\"` wrapper itself",
                subject.attr
            ),
        );
    }
    for param in &sig.generics.params {
        let msg = match param {
            GenericParam::Type(_) => format!(
                "{noun} cannot be generic: the host calls one concrete function; write the \
                 concrete types"
            ),
            GenericParam::Const(_) => format!(
                "{noun} cannot have const generic parameters: the host calls one concrete \
                 function; write the concrete value"
            ),
            GenericParam::Lifetime(_) => format!(
                "{noun} cannot have lifetime parameters; borrow with elided lifetimes instead \
                 (`text: &str`)"
            ),
        };
        err(param, msg);
    }
    if let Some(clause) = &sig.generics.where_clause {
        err(
            clause,
            format!("{noun} cannot have a `where` clause: the host calls one concrete function"),
        );
    }
    if let Some(variadic) = &sig.variadic {
        err(
            variadic,
            format!("{noun} cannot be variadic: its arguments are one MessagePack array"),
        );
    }
}

/// Pushes an error for a parameter type that cannot be decoded from the input: `impl Trait`
/// and a `'static` borrow.
pub(crate) fn check_param(ty: &Type, subject: Subject, errors: &mut Vec<syn::Error>) {
    if let Some(tokens) = find_impl_trait(ty) {
        errors.push(syn::Error::new_spanned(
            &tokens,
            format!(
                "{} cannot take `impl Trait`: the argument is decoded from MessagePack into one \
                 concrete type; write that type",
                subject.noun
            ),
        ));
    }
    if let Some(tokens) = find_static_ref(ty) {
        errors.push(syn::Error::new_spanned(
            &tokens,
            "a parameter cannot borrow for `'static`: the input bytes live only for the \
             call; borrow with an elided lifetime (`&str`) or take an owned type (`String`)",
        ));
    }
}

/// The environment (the first parameter, when it is named `env` or `_env` or carries
/// `#[env]`) and the arguments of a function exported like `#[export]`, each checked with
/// [`check_param`]. Receivers are skipped: the caller decides what they mean.
pub(crate) fn env_and_params(
    sig: &Signature,
    env_marks: &[Option<Attribute>],
    subject: Subject,
    errors: &mut Vec<syn::Error>,
) -> (Option<Type>, Vec<(String, Type)>) {
    let mut env = None;
    let mut params = Vec::new();
    for (i, arg) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(pat) = arg else {
            continue;
        };
        check_param(&pat.ty, subject, errors);
        let name = param_name(&pat.pat);
        let named_env = i == 0 && (name == "env" || name == "_env");
        match env_marks.get(i).and_then(Option::as_ref) {
            Some(mark) if i != 0 => errors.push(syn::Error::new_spanned(
                mark,
                "`#[env]` marks the first parameter only: the environment comes before the \
                 arguments",
            )),
            Some(_) => env = Some((*pat.ty).clone()),
            None if named_env => env = Some((*pat.ty).clone()),
            None => params.push((name, (*pat.ty).clone())),
        }
    }
    (env, params)
}

/// Combines errors into one, or `Ok(())` when there are none.
pub(crate) fn combine(errors: Vec<syn::Error>) -> syn::Result<()> {
    match errors.into_iter().reduce(|mut all, e| {
        all.combine(e);
        all
    }) {
        Some(all) => Err(all),
        None => Ok(()),
    }
}

fn check(func: &ItemFn, args: &Args, env_marks: &[Option<Attribute>]) -> syn::Result<Plan> {
    let sig = &func.sig;
    let mut errors: Vec<syn::Error> = Vec::new();

    check_signature(sig, EXPORTED_FN, &mut errors);
    if let Some(recv) = sig.receiver() {
        errors.push(syn::Error::new_spanned(
            recv,
            "an exported function cannot take `self`: #[export] applies to free functions; put \
             the state in the first parameter, `env`",
        ));
    }
    let (env, params) = env_and_params(sig, env_marks, EXPORTED_FN, &mut errors);

    let export_name = match &args.name {
        Some((name, span)) => {
            check_name(name, *span).map_err(|e| errors.push(e)).ok();
            name.clone()
        }
        None => {
            let name = sig.ident.to_string();
            let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
            check_name(&name, sig.ident.span())
                .map_err(|e| {
                    errors.push(syn::Error::new(
                        e.span(),
                        format!("{e}; rename the export with #[export(name = \"...\")]"),
                    ))
                })
                .ok();
            name
        }
    };
    combine(errors)?;

    let (returns, returns_result) = returns(&sig.output);
    let description = ExportDescription {
        name: export_name.clone(),
        doc: doc_string(&func.attrs),
        env: env.as_ref().map(type_string),
        params: params
            .iter()
            .map(|(name, ty)| Param {
                name: name.clone(),
                ty: type_string(ty),
            })
            .collect(),
        returns,
    };
    Ok(Plan {
        export_name,
        env,
        params,
        returns_result,
        description,
    })
}

/// A return type as the description writes it, and whether it is unpacked as a `Result`.
pub(crate) fn returns(output: &ReturnType) -> (String, bool) {
    match output {
        ReturnType::Default => ("()".to_owned(), false),
        ReturnType::Type(_, ty) => (type_string(ty), is_result(ty)),
    }
}

pub(crate) fn check_name(name: &str, span: Span) -> syn::Result<()> {
    if name.is_empty() {
        return Err(syn::Error::new(span, "the export name is empty"));
    }
    if name.len() > MAX_EXPORT_NAME {
        return Err(syn::Error::new(
            span,
            format!(
                "the export name is {} bytes, more than the limit of {MAX_EXPORT_NAME}",
                name.len()
            ),
        ));
    }
    if name.contains('\0') {
        return Err(syn::Error::new(span, "the export name contains a NUL byte"));
    }
    if RESERVED.contains(&name) || name.starts_with(RESERVED_PREFIX) {
        return Err(syn::Error::new(
            span,
            format!(
                "the export name `{name}` is reserved by the wasmpickle ABI (reserved: {}, \
                 and every name starting with `{RESERVED_PREFIX}`)",
                RESERVED.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The parameter's name for its description: the binding (`x` for `mut x`), or the pattern
/// as written (`(a, b)`, `_`).
pub(crate) fn param_name(pat: &Pat) -> String {
    match pat {
        Pat::Ident(ident) if ident.subpat.is_none() => {
            let name = ident.ident.to_string();
            name.strip_prefix("r#").unwrap_or(&name).to_owned()
        }
        other => type_string(other),
    }
}

/// The first `impl Trait` anywhere in a type (`impl Display`, `Vec<impl Display>`): the
/// whole type when it is one, else its `impl` keyword.
fn find_impl_trait(ty: &Type) -> Option<TokenStream> {
    fn walk(stream: TokenStream) -> Option<TokenStream> {
        stream.into_iter().find_map(|tree| match tree {
            TokenTree::Ident(ident) if ident == "impl" => Some(ident.into_token_stream()),
            TokenTree::Group(group) => walk(group.stream()),
            _ => None,
        })
    }
    match ty {
        Type::ImplTrait(_) => Some(ty.to_token_stream()),
        _ => walk(ty.to_token_stream()),
    }
}

/// The first `&'static` anywhere in a type.
fn find_static_ref(ty: &Type) -> Option<TokenStream> {
    fn walk(stream: TokenStream) -> Option<TokenStream> {
        let trees: Vec<TokenTree> = stream.into_iter().collect();
        trees.iter().enumerate().find_map(|(i, tree)| match tree {
            TokenTree::Punct(amp) if amp.as_char() == '&' => match trees.get(i + 1..i + 3) {
                Some([TokenTree::Punct(quote), TokenTree::Ident(name)])
                    if quote.as_char() == '\'' && name == "static" =>
                {
                    Some(trees[i..i + 3].iter().cloned().collect())
                }
                _ => None,
            },
            TokenTree::Group(group) => walk(group.stream()),
            _ => None,
        })
    }
    walk(ty.to_token_stream())
}

/// Whether a return type is written as a path whose last segment is `Result`
/// (`Result<T, E>`, `anyhow::Result<T>`, `io::Result<T>`).
pub(crate) fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .qself
            .is_none()
            .then(|| path.path.segments.last())
            .flatten()
            .is_some_and(|seg| seg.ident == "Result"),
        Type::Group(group) => is_result(&group.elem),
        Type::Paren(paren) => is_result(&paren.elem),
        _ => false,
    }
}

/// The `///` lines of an item: one leading space per line removed, joined by newlines,
/// trimmed.
pub(crate) fn doc_string(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                Expr::Lit(lit) => match &lit.lit {
                    Lit::Str(s) => Some(s.value()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .flat_map(|doc| {
            doc.split('\n')
                .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

fn generate(func: &ItemFn, plan: &Plan) -> TokenStream {
    let fn_name = &func.sig.ident;
    let (decode, call_args) = decode_inputs(plan.env.as_ref(), &plan.params);
    let reply = reply(plan.returns_result, return_span(&func.sig));
    let call = format_ident!("__wasmpickle_call");
    let call_fn = call_fn(
        &call,
        quote! {
            #decode
            let __wasmpickle_result = #fn_name(#call_args);
            #reply
        },
    );
    let export = wasm_export(
        &plan.export_name,
        &format_ident!("__wasmpickle_export"),
        &call,
    );
    let description = description_static(
        &format_ident!("__WASMPICKLE_DESCRIPTION"),
        &plan.description,
    );

    // The glue exists exactly when the function does.
    let cfgs = func.attrs.iter().filter(|a| a.path().is_ident("cfg"));

    quote! {
        #func

        #(#cfgs)*
        const _: () = {
            #call_fn
            #export
            #description
        };
    }
}

/// The path of the SDK's runtime, as generated code names it.
pub(crate) fn sdk() -> TokenStream {
    quote!(::wasmpickle_guest::__private)
}

/// The statements of a glue function ([`call_fn`]) that decode its inputs, binding them or
/// returning a bad-input reply, and the argument list to call the function with
/// (`env, arg0, arg1,`). Without an environment it must be `nil`.
pub(crate) fn decode_inputs(
    env: Option<&Type>,
    params: &[(String, Type)],
) -> (TokenStream, TokenStream) {
    let sdk = sdk();
    let env_bytes = format_ident!("__wasmpickle_env");
    let args_bytes = format_ident!("__wasmpickle_args");

    let (decode_env, env_arg) = match env {
        Some(ty) => {
            let what = type_string(ty);
            let decode = quote_spanned! {ty.span()=>
                let __wasmpickle_env_value: #ty =
                    match #sdk::decode_env::<#ty>(#env_bytes, #what) {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(reply) => return reply,
                    };
            };
            (decode, quote!(__wasmpickle_env_value,))
        }
        None => (
            quote! {
                if let ::core::result::Result::Err(reply) =
                    #sdk::decode_env::<()>(#env_bytes, "()")
                {
                    return reply;
                }
            },
            quote!(),
        ),
    };

    let arg_idents: Vec<_> = (0..params.len())
        .map(|i| format_ident!("__wasmpickle_arg{}", i))
        .collect();
    let arg_types: Vec<&Type> = params.iter().map(|(_, ty)| ty).collect();
    let tuple_text = match arg_types.as_slice() {
        [] => "()".to_owned(),
        [one] => format!("({},)", type_string(one)),
        many => format!(
            "({})",
            many.iter().map(type_string).collect::<Vec<_>>().join(", ")
        ),
    };
    let decode_args = if params.is_empty() {
        quote! {
            if let ::core::result::Result::Err(reply) =
                #sdk::decode_args::<()>(#args_bytes, "()")
            {
                return reply;
            }
        }
    } else {
        // Spanned at the first parameter's type so that "the trait `Deserialize` is not
        // implemented" points into the user's signature.
        let span = arg_types[0].span();
        quote_spanned! {span=>
            let (#(#arg_idents,)*): (#(#arg_types,)*) =
                match #sdk::decode_args::<(#(#arg_types,)*)>(#args_bytes, #tuple_text) {
                    ::core::result::Result::Ok(value) => value,
                    ::core::result::Result::Err(reply) => return reply,
                };
        }
    };

    (
        quote! {
            #decode_env
            #decode_args
        },
        quote!(#env_arg #(#arg_idents,)*),
    )
}

/// Where type errors about a function's result should point: its return type, or its name
/// when it has none.
pub(crate) fn return_span(sig: &Signature) -> Span {
    match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.ident.span(),
    }
}

/// The expression that turns `__wasmpickle_result` into a reply: `Ok`/`Err` unpacked when
/// the function returns a `Result`, else the value itself.
pub(crate) fn reply(returns_result: bool, span: Span) -> TokenStream {
    let sdk = sdk();
    if returns_result {
        quote_spanned! {span=>
            match __wasmpickle_result {
                ::core::result::Result::Ok(value) => #sdk::ok_reply(&value),
                ::core::result::Result::Err(error) => #sdk::error_reply(&error),
            }
        }
    } else {
        quote_spanned! {span=> #sdk::ok_reply(&__wasmpickle_result) }
    }
}

/// A glue function `fn name(env: &[u8], args: &[u8]) -> Vec<u8>` around `body`, which sees
/// the inputs as `__wasmpickle_env` and `__wasmpickle_args`. Compiled on every target (see
/// the module docs), and dead code off wasm.
pub(crate) fn call_fn(name: &Ident, body: TokenStream) -> TokenStream {
    let sdk = sdk();
    quote! {
        #[allow(dead_code, clippy::needless_lifetimes)]
        fn #name<'de>(__wasmpickle_env: &'de [u8], __wasmpickle_args: &'de [u8])
            -> #sdk::Vec<u8>
        {
            #body
        }
    }
}

/// On wasm only: the `extern "C"` function `ident`, exported as `export_name`, that runs the
/// glue function `call` on the host's buffers.
pub(crate) fn wasm_export(export_name: &str, ident: &Ident, call: &Ident) -> TokenStream {
    let sdk = sdk();
    quote! {
        #[cfg(target_family = "wasm")]
        #[unsafe(export_name = #export_name)]
        extern "C" fn #ident(
            env_ptr: u32,
            env_len: u32,
            args_ptr: u32,
            args_len: u32,
        ) -> u64 {
            // SAFETY: only the host calls this export, following the ABI: the two regions
            // lie inside memory it got from `wasmpickle_alloc` and filled.
            unsafe {
                #sdk::run(env_ptr, env_len, args_ptr, args_len, #call)
            }
        }
    }
}

/// On wasm only: the static `ident` in the `wasmpickle.exports` custom section, holding
/// `description` encoded now, at expansion time.
pub(crate) fn description_static(ident: &Ident, description: &ExportDescription) -> TokenStream {
    let bytes = description.to_bytes();
    let len = bytes.len();
    let bytes = proc_macro2::Literal::byte_string(&bytes);
    quote! {
        #[cfg(target_family = "wasm")]
        #[unsafe(link_section = "wasmpickle.exports")]
        #[used]
        static #ident: [u8; #len] = *#bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(attr: TokenStream, item: TokenStream) -> syn::Result<Plan> {
        let mut func: ItemFn = syn::parse2(item).expect("a fn");
        let args = Args::parse(attr, "export_name")?;
        let marks = strip_env_attrs(&mut func.sig);
        check(&func, &args, &marks)
    }

    #[test]
    fn description_records_the_signature_as_written() {
        let plan = plan(
            quote!(),
            quote! {
                /// Multiplies.
                ///
                ///   Indented line.
                pub fn scale(env: Scale, x: f64, ys: Vec<Option<u8>>) -> Result<u64, String> {
                    todo!()
                }
            },
        )
        .unwrap();
        let d = &plan.description;
        assert_eq!(d.name, "scale");
        assert_eq!(d.doc, "Multiplies.\n\n  Indented line.");
        assert_eq!(d.env.as_deref(), Some("Scale"));
        assert_eq!(
            d.signature(),
            "scale(env: Scale, x: f64, ys: Vec<Option<u8>>) -> Result<u64, String>"
        );
        assert!(plan.returns_result);
        assert_eq!(
            ExportDescription::parse_section(&d.to_bytes()).unwrap(),
            vec![d.clone()]
        );
    }

    #[test]
    fn env_is_found_by_name_or_mark() {
        let p = plan(
            quote!(),
            quote!(
                fn f(_env: u8, x: u8) {}
            ),
        )
        .unwrap();
        assert_eq!(p.description.env.as_deref(), Some("u8"));
        assert_eq!(p.params.len(), 1);
        let p = plan(
            quote!(),
            quote!(
                fn f(#[env] base: u8, x: u8) {}
            ),
        )
        .unwrap();
        assert_eq!(p.description.env.as_deref(), Some("u8"));
        assert_eq!(p.description.returns, "()");
        let p = plan(
            quote!(),
            quote!(
                fn f(x: u8, env: u8) {}
            ),
        )
        .unwrap();
        assert_eq!(p.description.env, None);
        assert_eq!(p.params.len(), 2);
    }

    #[test]
    fn result_is_recognized_by_last_segment() {
        for (ty, expected) in [
            (quote!(Result<u8, String>), true),
            (quote!(anyhow::Result<u8>), true),
            (quote!(std::io::Result<()>), true),
            (quote!(Option<Result<u8, u8>>), false),
            (quote!(Outcome), false),
            (quote!(<T as Trait>::Result), false),
        ] {
            let ty: Type = syn::parse2(ty.clone()).unwrap();
            assert_eq!(is_result(&ty), expected, "{}", type_string(&ty));
        }
    }

    #[test]
    fn renaming_and_reserved_names() {
        let p = plan(
            quote!(name = "other"),
            quote!(
                fn f() {}
            ),
        )
        .unwrap();
        assert_eq!(p.export_name, "other");
        assert_eq!(p.description.name, "other");
        for bad in ["memory", "wasmpickle_alloc", "wasmpickle_x", ""] {
            assert!(
                plan(
                    quote!(name = #bad),
                    quote!(
                        fn f() {}
                    )
                )
                .is_err(),
                "{bad}"
            );
        }
        let long = "x".repeat(MAX_EXPORT_NAME + 1);
        assert!(
            plan(
                quote!(name = #long),
                quote!(
                    fn f() {}
                )
            )
            .is_err()
        );
    }

    #[test]
    fn misuse_expands_to_compile_errors_not_panics() {
        for (attr, item) in [
            (
                quote!(),
                quote!(
                    struct S;
                ),
            ),
            (
                quote!(),
                quote!(
                    async fn f() {}
                ),
            ),
            (
                quote!(),
                quote!(
                    fn f<T>(x: T) {}
                ),
            ),
            (
                quote!(),
                quote!(
                    fn f(&self) {}
                ),
            ),
            (
                quote!(bogus),
                quote!(
                    fn f() {}
                ),
            ),
            (
                quote!(name = 1),
                quote!(
                    fn f() {}
                ),
            ),
            (
                quote!(),
                quote!(
                    fn f(x: u8, #[env] y: u8) {}
                ),
            ),
        ] {
            let out = expand(attr, item).to_string();
            assert!(out.contains("compile_error"), "{out}");
            assert!(!out.contains("# [env]"), "{out}");
        }
    }
}
