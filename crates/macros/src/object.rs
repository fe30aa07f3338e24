//! `#[object]`: exports a type's inherent `impl` block as a live object, a *twin*.
//!
//! The expansion of
//!
//! ```text
//! #[object]
//! impl Counter {
//!     pub fn new(env: Start) -> Self { ... }
//!     pub fn incr(&mut self) -> i64 { ... }
//! }
//! ```
//!
//! is the `impl` block itself, unchanged but for the helper attributes (`#[env]`,
//! `#[method]`), followed by one anonymous `const _: () = { ... };` block holding:
//!
//! * the object slot, `static __WASMPICKLE_OBJECT: ObjectSlot<Counter>`: a plain static, so
//!   the object lives in linear memory, where the host's snapshot of an instance finds it;
//! * for the constructor and each method, a glue function like `#[export]`'s
//!   (`__wasmpickle_call_<i>`), compiled on every target so that type errors show up in a
//!   native `cargo check`. The constructor's decodes the inputs, calls `Counter::new` and puts
//!   the object in the slot; a method's takes the object out of the slot by reference,
//!   decodes the arguments and calls the method;
//! * on wasm only, an `extern "C"` export per glue function (`Counter.new`, `Counter.incr`)
//!   and its description in the `wasmpickle.exports` custom section, written by the same code
//!   as `#[export]`'s.
//!
//! One const block holds everything because the glue functions share the slot, which must not
//! be nameable from outside: nothing but the exports may touch it (see `ObjectSlot`'s safety
//! contract). The glue lives outside the `impl`, where `Self` means nothing, so every `Self`
//! in a signature is replaced by the impl's type before it is used in generated code (and in
//! the descriptions, which must make sense on their own).
//!
//! Every misuse is a `syn::Error` pointing at the offending tokens, and the `impl` block is
//! emitted even when it is rejected, as `#[export]` does with its function.

use std::collections::HashSet;

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::{
    Attribute, FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, PathArguments, ReceiverKind,
    ReturnType, Type, Visibility,
};
use wasmpickle_format::MAX_EXPORT_NAME;
use wasmpickle_format::abi::{ExportDescription, Param};

use crate::export::{
    Args, Subject, call_fn, check_name, check_param, check_signature, combine, decode_inputs,
    description_static, doc_string, env_and_params, is_result, item_head, param_name, reply,
    return_span, returns, sdk, strip_env_attrs, wasm_export,
};
use crate::render::type_string;

const CONSTRUCTOR: Subject = Subject {
    noun: "an object's constructor",
    attr: "#[object]",
};

const METHOD: Subject = Subject {
    noun: "an exported method",
    attr: "#[object]",
};

/// The name of the constructor, in Rust and in the export name.
const NEW: &str = "new";

/// The helper attributes found on one function of the impl, removed from it.
#[derive(Default)]
struct Helpers {
    /// `#[method(...)]` attributes (more than one is an error).
    method: Vec<Attribute>,
    /// Per parameter, its `#[env]` mark.
    env_marks: Vec<Option<Attribute>>,
}

/// Entry point: the whole expansion, or the item followed by compile errors.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut imp = match syn::parse2::<ItemImpl>(item.clone()) {
        Ok(imp) => imp,
        Err(_) => {
            let err = match syn::parse2::<syn::Item>(item.clone()) {
                Ok(other) => syn::Error::new_spanned(
                    item_head(&other),
                    "#[object] applies to an inherent `impl` block (`impl Counter { ... }`), \
                     not to this item",
                ),
                Err(e) => e,
            };
            let err = err.to_compile_error();
            return quote!(#item #err);
        }
    };
    // Strip the helpers before anything else, so even a rejected impl is emitted without
    // attributes rustc does not know.
    let helpers = strip_helpers(&mut imp);
    let args = Args::parse(attr, "ObjectName");
    let fallback = Args::default();
    let checked = check(&imp, args.as_ref().unwrap_or(&fallback), &helpers);
    let errors = match (args, checked) {
        (Ok(_), Ok(plan)) => return generate(&imp, &plan),
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        (Err(mut all), Err(more)) => {
            all.combine(more);
            all
        }
    };
    let errors = errors.to_compile_error();
    quote!(#imp #errors)
}

/// Removes `#[method]` and `#[env]` from every function of the impl; returns them per item
/// (empty for items that are not functions).
fn strip_helpers(imp: &mut ItemImpl) -> Vec<Helpers> {
    imp.items
        .iter_mut()
        .map(|item| match item {
            ImplItem::Fn(func) => {
                let mut method = Vec::new();
                func.attrs.retain(|a| {
                    let helper = a.path().is_ident("method");
                    if helper {
                        method.push(a.clone());
                    }
                    !helper
                });
                Helpers {
                    method,
                    env_marks: strip_env_attrs(&mut func.sig),
                }
            }
            _ => Helpers::default(),
        })
        .collect()
}

/// What one export of the object does.
enum Role {
    /// `new`: puts its result in the slot.
    Constructor,
    /// A method: borrows the object from the slot, mutably or not.
    Method { mutable: bool },
}

/// One export of the object: the constructor or a method.
struct Entry {
    role: Role,
    /// The Rust function.
    ident: syn::Ident,
    export_name: String,
    /// With `Self` replaced, as all the types below.
    env: Option<Type>,
    params: Vec<(String, Type)>,
    returns_result: bool,
    ret_span: Span,
    /// The function's `#[cfg]` attributes, which its glue copies.
    cfgs: Vec<Attribute>,
    description: ExportDescription,
}

/// What the generated glue needs to know about a checked impl.
struct Plan {
    /// The object's name, the prefix of its export names.
    name: String,
    /// Constructor first.
    entries: Vec<Entry>,
}

fn check(imp: &ItemImpl, args: &Args, helpers: &[Helpers]) -> syn::Result<Plan> {
    let mut errors: Vec<syn::Error> = Vec::new();
    let mut err = |tokens: &dyn ToTokens, msg: String| {
        errors.push(syn::Error::new_spanned(tokens, msg));
    };

    if let Some((path, for_token)) = &imp.trait_ {
        err(
            &quote!(#path #for_token),
            "#[object] applies to an inherent `impl` block, not to a trait impl: the host calls \
             the type's own `new` and methods; write `impl Type { ... }`"
                .to_owned(),
        );
        // A trait impl has no constructor or methods of the object's to check.
        return Err(combine(errors).expect_err("an error was just pushed"));
    }
    if !imp.generics.params.is_empty() {
        err(
            &imp.generics,
            "an object cannot be generic: its instance holds one object of one concrete type; \
             write `impl Type<Concrete> { ... }`"
                .to_owned(),
        );
    }
    if let Some(clause) = &imp.generics.where_clause {
        err(
            clause,
            "an object's impl cannot have a `where` clause: its instance holds one object of \
             one concrete type"
                .to_owned(),
        );
    }

    // The type's own name, for the default object name and to recognize `-> Counter`.
    let type_name = match &*imp.self_ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    };
    let Some(type_name) = type_name else {
        err(
            &imp.self_ty,
            "#[object] needs a named type (`impl Counter { ... }`), not this type".to_owned(),
        );
        return Err(combine(errors).expect_err("an error was just pushed"));
    };

    let name = match &args.name {
        Some((name, span)) => {
            if let Some(e) = object_name_error(name, *span) {
                errors.push(e);
            }
            name.clone()
        }
        None => {
            let name = type_name.ident.to_string();
            let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
            if let Some(e) = object_name_error(&name, type_name.ident.span()) {
                errors.push(syn::Error::new(
                    e.span(),
                    format!("{e}; rename the object with #[object(name = \"...\")]"),
                ));
            }
            name
        }
    };

    let self_ty = &*imp.self_ty;
    // `Some(None)` once a `new` was found but rejected.
    let mut constructor: Option<Option<Entry>> = None;
    let mut methods = Vec::new();
    // The method names taken, to report duplicates made by renaming.
    let mut taken: HashSet<String> = HashSet::new();
    for (item, helpers) in imp.items.iter().zip(helpers) {
        let ImplItem::Fn(func) = item else {
            continue;
        };
        let fn_name = unraw(&func.sig.ident);
        let receiver = func.sig.receiver();
        if fn_name == NEW {
            for attr in &helpers.method {
                errors.push(syn::Error::new_spanned(
                    attr,
                    format!(
                        "`new` is the constructor, always exported as `{name}.{NEW}`: remove \
                         `#[method]`"
                    ),
                ));
            }
            if let Some(recv) = receiver {
                errors.push(syn::Error::new_spanned(
                    recv,
                    "an object's constructor cannot take `self`: it creates the object; \
                     write `fn new(env: Env, ...) -> Self`",
                ));
                constructor = Some(None);
                continue;
            }
            constructor = Some(check_constructor(
                func,
                helpers,
                &name,
                self_ty,
                type_name,
                &mut errors,
            ));
        } else if receiver.is_some() && matches!(func.vis, Visibility::Public(_)) {
            if let Some((entry, span)) = check_method(func, helpers, &name, self_ty, &mut errors) {
                let short = entry.export_name[name.len() + 1..].to_owned();
                if !taken.insert(short) {
                    errors.push(syn::Error::new(
                        span,
                        format!("two methods are exported as `{}`", entry.export_name),
                    ));
                }
                methods.push(entry);
            }
        } else {
            for attr in &helpers.method {
                errors.push(syn::Error::new_spanned(
                    attr,
                    "#[method] applies to exported methods only: `pub fn` with `&self` or \
                     `&mut self`",
                ));
            }
            for mark in helpers.env_marks.iter().flatten() {
                errors.push(syn::Error::new_spanned(
                    mark,
                    "`#[env]` marks the environment of the constructor `new` only",
                ));
            }
        }
    }

    let Some(constructor) = constructor else {
        let head = {
            let impl_token = &imp.impl_token;
            quote!(#impl_token #self_ty)
        };
        errors.push(syn::Error::new_spanned(
            head,
            format!(
                "#[object] needs a constructor: add `fn new(...) -> Self` to this impl (the host \
                 calls it as `{name}.{NEW}`)"
            ),
        ));
        return Err(combine(errors).expect_err("an error was just pushed"));
    };
    combine(errors)?;
    let mut entries = vec![constructor.expect("errors were reported above")];
    entries.extend(methods);
    Ok(Plan { name, entries })
}

/// Why `name` cannot name an object: the rules of export names, and no `.`, which separates
/// the object's name from the method's.
fn object_name_error(name: &str, span: Span) -> Option<syn::Error> {
    if let Err(e) = check_name(name, span) {
        let e = e.to_string().replace("the export name", "the object name");
        return Some(syn::Error::new(span, e));
    }
    if name.contains('.') {
        return Some(syn::Error::new(
            span,
            format!(
                "the object name `{name}` contains `.`, which separates it from the method in \
                 export names (`{name}.{NEW}`)"
            ),
        ));
    }
    let longest = format!("{name}.{NEW}");
    if longest.len() > MAX_EXPORT_NAME {
        return Some(syn::Error::new(
            span,
            format!("the export name `{longest}` is longer than the limit of {MAX_EXPORT_NAME}"),
        ));
    }
    None
}

/// Checks `new`. Returns `None` when it is rejected (the errors are pushed).
fn check_constructor(
    func: &ImplItemFn,
    helpers: &Helpers,
    name: &str,
    self_ty: &Type,
    type_name: &syn::PathSegment,
    errors: &mut Vec<syn::Error>,
) -> Option<Entry> {
    let before = errors.len();
    let sig = &func.sig;
    check_signature(sig, CONSTRUCTOR, errors);
    let (env, params) = env_and_params(sig, &helpers.env_marks, CONSTRUCTOR, errors);

    let returns_result = match &sig.output {
        ReturnType::Default => {
            errors.push(syn::Error::new_spanned(
                &sig.ident,
                "an object's constructor must return `Self` or `Result<Self, E>`",
            ));
            false
        }
        ReturnType::Type(_, ty) => {
            let result = is_result(ty);
            let value = if result { ok_type(ty) } else { Some(&**ty) };
            if !value.is_some_and(|value| names_self(value, type_name)) {
                errors.push(syn::Error::new_spanned(
                    ty,
                    format!(
                        "an object's constructor must return `Self` or `Result<Self, E>`, not \
                         `{}`",
                        type_string(ty)
                    ),
                ));
            }
            result
        }
    };
    if errors.len() > before {
        return None;
    }

    let (returns, _) = returns(&sig.output);
    let env = env.map(|ty| replace_self(&ty, self_ty));
    let params = replace_self_in(params, self_ty);
    let export_name = format!("{name}.{NEW}");
    Some(Entry {
        role: Role::Constructor,
        ident: sig.ident.clone(),
        description: describe(
            &export_name,
            &func.attrs,
            env.as_ref(),
            &params,
            spell_self(&returns, self_ty),
        ),
        export_name,
        env,
        params,
        returns_result,
        ret_span: return_span(sig),
        cfgs: cfgs(&func.attrs),
    })
}

/// Checks an exported method. Returns it with the span of its name (the string of
/// `#[method(name = "...")]`, else the function's name), or `None` when it is rejected (the
/// errors are pushed).
fn check_method(
    func: &ImplItemFn,
    helpers: &Helpers,
    name: &str,
    self_ty: &Type,
    errors: &mut Vec<syn::Error>,
) -> Option<(Entry, Span)> {
    let before = errors.len();
    let sig = &func.sig;
    let recv = sig.receiver().expect("the caller checked for a receiver");
    let by_value = "an exported method cannot take `self` by value: the object stays in its \
                    instance between calls; take `&self` or `&mut self`";
    let mutable = match &recv.kind {
        ReceiverKind::Reference(_, _, mutability) => mutability.is_some(),
        ReceiverKind::Typed(_, ty) => match &**ty {
            Type::Reference(reference) if is_self_type(&reference.elem, self_ty) => {
                reference.mutability.is_some()
            }
            _ => {
                errors.push(syn::Error::new_spanned(recv, by_value));
                false
            }
        },
        _ => {
            errors.push(syn::Error::new_spanned(recv, by_value));
            false
        }
    };
    check_signature(sig, METHOD, errors);
    let mut params = Vec::new();
    for (arg, mark) in sig.inputs.iter().zip(&helpers.env_marks) {
        if let Some(mark) = mark {
            errors.push(syn::Error::new_spanned(
                mark,
                "an exported method takes no environment (it must be `nil`): the object is its \
                 state; remove `#[env]`",
            ));
        }
        if let FnArg::Typed(pat) = arg {
            check_param(&pat.ty, METHOD, errors);
            params.push((param_name(&pat.pat), (*pat.ty).clone()));
        }
    }

    let method = match helpers.method.as_slice() {
        [] => Some((unraw(&sig.ident), sig.ident.span())),
        [attr] => method_name(attr, errors),
        [_, second, ..] => {
            errors.push(syn::Error::new_spanned(
                second,
                "`#[method]` is given twice",
            ));
            None
        }
    };
    if let Some((method, span)) = &method
        && let Some(e) = method_name_error(name, method, *span)
    {
        errors.push(e);
    }
    if errors.len() > before {
        return None;
    }
    let (method, method_span) = method.expect("a missing name pushed an error");

    let (returns, returns_result) = returns(&sig.output);
    let params = replace_self_in(params, self_ty);
    let export_name = format!("{name}.{method}");
    let entry = Entry {
        role: Role::Method { mutable },
        ident: sig.ident.clone(),
        description: describe(
            &export_name,
            &func.attrs,
            None,
            &params,
            spell_self(&returns, self_ty),
        ),
        export_name,
        env: None,
        params,
        returns_result,
        ret_span: return_span(sig),
        cfgs: cfgs(&func.attrs),
    };
    Some((entry, method_span))
}

/// The name in `#[method(name = "...")]` and the span of its string, or `None` with an error
/// pushed.
fn method_name(attr: &Attribute, errors: &mut Vec<syn::Error>) -> Option<(String, Span)> {
    let tokens = match &attr.meta {
        syn::Meta::List(list) => list.tokens.clone(),
        _ => {
            errors.push(syn::Error::new_spanned(
                attr,
                "expected `#[method(name = \"method_name\")]`",
            ));
            return None;
        }
    };
    match Args::parse(tokens, "method_name") {
        Ok(Args { name: Some(name) }) => Some(name),
        Ok(Args { name: None }) => {
            errors.push(syn::Error::new_spanned(
                attr,
                "expected `#[method(name = \"method_name\")]`",
            ));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Why `method` cannot name a method of the object `object`.
fn method_name_error(object: &str, method: &str, span: Span) -> Option<syn::Error> {
    let msg = if method.is_empty() {
        "the method name is empty".to_owned()
    } else if method.contains('.') {
        format!("the method name `{method}` contains `.`, which separates names in exports")
    } else if method.contains('\0') {
        "the method name contains a NUL byte".to_owned()
    } else if method == NEW {
        format!("the method name `{NEW}` is the constructor's (`{object}.{NEW}`)")
    } else if object.len() + 1 + method.len() > MAX_EXPORT_NAME {
        format!(
            "the export name `{object}.{method}` is {} bytes, more than the limit of \
             {MAX_EXPORT_NAME}",
            object.len() + 1 + method.len()
        )
    } else {
        return None;
    };
    Some(syn::Error::new(span, msg))
}

/// An identifier without its `r#`.
fn unraw(ident: &syn::Ident) -> String {
    let name = ident.to_string();
    name.strip_prefix("r#").unwrap_or(&name).to_owned()
}

fn cfgs(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .cloned()
        .collect()
}

fn describe(
    export_name: &str,
    attrs: &[Attribute],
    env: Option<&Type>,
    params: &[(String, Type)],
    returns: String,
) -> ExportDescription {
    ExportDescription {
        name: export_name.to_owned(),
        doc: doc_string(attrs),
        env: env.map(type_string),
        params: params
            .iter()
            .map(|(name, ty)| Param {
                name: name.clone(),
                ty: type_string(ty),
            })
            .collect(),
        returns,
    }
}

/// The `T` of `Result<T, E>` (any path whose last segment is `Result`).
fn ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let PathArguments::AngleBracketed(args) = &path.path.segments.last()?.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    }
}

/// Whether `ty` is `Self` or the impl's type by its last path segment (`Counter`,
/// `crate::Counter`).
fn names_self(ty: &Type, type_name: &syn::PathSegment) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.is_ident("Self")
                || path
                    .path
                    .segments
                    .last()
                    .is_some_and(|last| type_string(last) == type_string(type_name))
        }
        Type::Group(group) => names_self(&group.elem, type_name),
        Type::Paren(paren) => names_self(&paren.elem, type_name),
        _ => false,
    }
}

/// Whether `ty` is `Self` or the impl's type as written in the impl.
fn is_self_type(ty: &Type, self_ty: &Type) -> bool {
    let text = type_string(ty);
    text == "Self" || text == type_string(self_ty)
}

/// A type rendered for a description, with `Self` spelled as the impl's type.
fn spell_self(text: &str, self_ty: &Type) -> String {
    match syn::parse_str::<Type>(text) {
        Ok(ty) => type_string(&replace_self(&ty, self_ty)),
        Err(_) => text.to_owned(),
    }
}

fn replace_self_in(params: Vec<(String, Type)>, self_ty: &Type) -> Vec<(String, Type)> {
    params
        .into_iter()
        .map(|(name, ty)| (name, replace_self(&ty, self_ty)))
        .collect()
}

/// `ty` with every `Self` replaced by the impl's type, for the glue, which lives outside the
/// impl. The replacement carries the span of the `Self` it replaces, so errors still point
/// into the signature. Before `::` it is written `<Type>`, since `Wrapper<u8>::Assoc` is not
/// a type but `<Wrapper<u8>>::Assoc` is.
fn replace_self(ty: &Type, self_ty: &Type) -> Type {
    fn respan(stream: TokenStream, span: Span) -> TokenStream {
        stream
            .into_iter()
            .map(|mut tree| {
                if let TokenTree::Group(group) = &tree {
                    let mut new = Group::new(group.delimiter(), respan(group.stream(), span));
                    new.set_span(span);
                    return TokenTree::Group(new);
                }
                tree.set_span(span);
                tree
            })
            .collect()
    }
    fn walk(stream: TokenStream, self_ty: &Type) -> TokenStream {
        let trees: Vec<TokenTree> = stream.into_iter().collect();
        let mut out = TokenStream::new();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                TokenTree::Ident(ident) if ident == "Self" => {
                    let before_path = matches!(
                        trees.get(i + 1),
                        Some(TokenTree::Punct(p)) if p.as_char() == ':'
                    );
                    let replacement = match before_path {
                        true => quote_spanned!(ident.span()=> <#self_ty>),
                        false => self_ty.to_token_stream(),
                    };
                    out.extend(respan(replacement, ident.span()));
                }
                TokenTree::Group(group) => {
                    let mut new = Group::new(group.delimiter(), walk(group.stream(), self_ty));
                    new.set_span(group.span());
                    out.extend([TokenTree::Group(new)]);
                }
                other => out.extend([other.clone()]),
            }
        }
        out
    }
    syn::parse2(walk(ty.to_token_stream(), self_ty)).unwrap_or_else(|_| ty.clone())
}

fn generate(imp: &ItemImpl, plan: &Plan) -> TokenStream {
    let sdk = sdk();
    let self_ty = &*imp.self_ty;
    let object_name = &plan.name;

    let mut glue = TokenStream::new();
    for (i, entry) in plan.entries.iter().enumerate() {
        let ident = &entry.ident;
        let (decode, call_args) = decode_inputs(entry.env.as_ref(), &entry.params);
        let body = match entry.role {
            Role::Constructor => {
                let span = entry.ret_span;
                // Spanned at the return type, so a constructor that returns something else
                // than the object is reported there.
                let put = |value: TokenStream| {
                    quote_spanned! {span=>
                        // SAFETY: the slot is this block's own, reached only from the
                        // object's exports, which the host calls one at a time on the
                        // instance's only thread, and `put` calls no code that could reach
                        // them.
                        unsafe { __WASMPICKLE_OBJECT.put(#value) };
                    }
                };
                let stored = if entry.returns_result {
                    let put = put(quote!(value));
                    quote_spanned! {span=>
                        match __wasmpickle_result {
                            ::core::result::Result::Ok(value) => {
                                #put
                                #sdk::ok_reply(&())
                            }
                            ::core::result::Result::Err(error) => #sdk::error_reply(&error),
                        }
                    }
                } else {
                    let put = put(quote!(__wasmpickle_result));
                    quote! {
                        #put
                        #sdk::ok_reply(&())
                    }
                };
                quote! {
                    #decode
                    let __wasmpickle_result = <#self_ty>::#ident(#call_args);
                    #stored
                }
            }
            Role::Method { mutable } => {
                let receiver = match mutable {
                    true => quote!(&mut *__wasmpickle_object),
                    false => quote!(&*__wasmpickle_object),
                };
                let reply = reply(entry.returns_result, entry.ret_span);
                quote! {
                    let __wasmpickle_body = |__wasmpickle_object: &mut #self_ty| -> #sdk::Vec<u8> {
                        #decode
                        let __wasmpickle_result = <#self_ty>::#ident(#receiver, #call_args);
                        #reply
                    };
                    // SAFETY: the slot is this block's own, reached only from the object's
                    // exports, which the host calls one at a time on the instance's only
                    // thread; the method cannot reach them either, so nothing else touches
                    // the slot while it runs.
                    unsafe { __WASMPICKLE_OBJECT.with(#object_name, __wasmpickle_body) }
                }
            }
        };
        let call = format_ident!("__wasmpickle_call_{}", i);
        let call_fn = call_fn(&call, body);
        let export = wasm_export(
            &entry.export_name,
            &format_ident!("__wasmpickle_export_{}", i),
            &call,
        );
        let description = description_static(
            &format_ident!("__WASMPICKLE_DESCRIPTION_{}", i),
            &entry.description,
        );
        // Each function's glue exists exactly when the function does.
        let cfgs = &entry.cfgs;
        glue.extend(quote! {
            #(#cfgs)*
            const _: () = {
                #call_fn
                #export
                #description
            };
        });
    }

    // The glue exists exactly when the impl does.
    let cfgs = imp.attrs.iter().filter(|a| a.path().is_ident("cfg"));

    quote! {
        #imp

        #(#cfgs)*
        const _: () = {
            /// The instance's object: empty until the constructor succeeds.
            #[allow(dead_code)]
            static __WASMPICKLE_OBJECT: #sdk::ObjectSlot<#self_ty> = #sdk::ObjectSlot::new();

            #glue
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(attr: TokenStream, item: TokenStream) -> syn::Result<Plan> {
        let mut imp: ItemImpl = syn::parse2(item).expect("an impl");
        let args = Args::parse(attr, "ObjectName")?;
        let helpers = strip_helpers(&mut imp);
        check(&imp, &args, &helpers)
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.entries
            .iter()
            .map(|e| e.export_name.as_str())
            .collect()
    }

    #[test]
    fn exports_new_and_pub_methods_with_a_receiver() {
        let plan = plan(
            quote!(),
            quote! {
                impl Counter {
                    /// Starts at `env`.
                    pub fn new(env: i64) -> Self { todo!() }
                    /// Adds one.
                    pub fn incr(&mut self) -> i64 { todo!() }
                    pub fn get(&self) -> i64 { todo!() }
                    pub fn add(self: &mut Self, env: i64) -> i64 { todo!() }
                    fn private(&self) {}
                    pub(crate) fn crate_only(&self) {}
                    pub fn associated() -> u8 { 1 }
                    const C: u8 = 1;
                }
            },
        )
        .unwrap();
        assert_eq!(plan.name, "Counter");
        assert_eq!(
            names(&plan),
            ["Counter.new", "Counter.incr", "Counter.get", "Counter.add"]
        );
        let new = &plan.entries[0].description;
        assert_eq!(new.signature(), "Counter.new(env: i64) -> Counter");
        assert_eq!(new.doc, "Starts at `env`.");
        let incr = &plan.entries[1].description;
        assert_eq!(incr.env, None);
        assert_eq!(incr.signature(), "Counter.incr() -> i64");
        // A method's parameter named `env` is an argument: methods have no environment.
        let add = &plan.entries[3];
        assert_eq!(add.params.len(), 1);
        assert!(matches!(add.role, Role::Method { mutable: true }));
        assert!(matches!(
            plan.entries[2].role,
            Role::Method { mutable: false }
        ));
    }

    #[test]
    fn constructor_forms() {
        for (ret, result) in [
            (quote!(Self), false),
            (quote!(Counter), false),
            (quote!(crate::Counter), false),
            (quote!(Result<Self, String>), true),
            (quote!(anyhow::Result<Counter>), true),
        ] {
            let plan = plan(
                quote!(),
                quote! {
                    impl Counter {
                        fn new(#[env] start: i64, step: &str) -> #ret { todo!() }
                    }
                },
            )
            .unwrap();
            let new = &plan.entries[0];
            assert_eq!(new.returns_result, result, "{ret}");
            assert_eq!(new.description.env.as_deref(), Some("i64"));
            assert_eq!(new.params.len(), 1);
        }
        for ret in [quote!(u8), quote!(Option<Self>), quote!(Result<u8, String>)] {
            let err = plan(
                quote!(),
                quote! {
                    impl Counter {
                        fn new() -> #ret { todo!() }
                    }
                },
            )
            .err()
            .unwrap_or_else(|| panic!("{ret} accepted"));
            assert!(err.to_string().contains("must return `Self`"), "{err}");
        }
    }

    #[test]
    fn self_is_spelled_out_for_the_glue_and_descriptions() {
        let plan = plan(
            quote!(name = "Pair"),
            quote! {
                impl Wrapper<u8> {
                    pub fn new() -> Result<Self, String> { todo!() }
                    #[method(name = "merge_with")]
                    pub fn merge(&mut self, other: Self, more: Vec<Self>, n: Self::Assoc) -> Self {
                        todo!()
                    }
                }
            },
        )
        .unwrap();
        assert_eq!(
            plan.entries[0].description.signature(),
            "Pair.new() -> Result<Wrapper<u8>, String>"
        );
        assert_eq!(
            plan.entries[1].description.signature(),
            "Pair.merge_with(other: Wrapper<u8>, more: Vec<Wrapper<u8>>, \
             n: <Wrapper<u8>>::Assoc) -> Wrapper<u8>"
        );
    }

    #[test]
    fn object_and_method_names_are_checked() {
        let item = quote! {
            impl Counter {
                fn new() -> Self { todo!() }
            }
        };
        for bad in ["", "a.b", "memory", "wasmpickle_x"] {
            assert!(plan(quote!(name = #bad), item.clone()).is_err(), "{bad}");
        }
        let long = "x".repeat(MAX_EXPORT_NAME - 3);
        assert!(plan(quote!(name = #long), item.clone()).is_err());
        let fits = "x".repeat(MAX_EXPORT_NAME - 4);
        assert!(plan(quote!(name = #fits), item).is_ok());
        for bad in ["", "a.b", "new"] {
            let item = quote! {
                impl Counter {
                    fn new() -> Self { todo!() }
                    #[method(name = #bad)]
                    pub fn get(&self) {}
                }
            };
            assert!(plan(quote!(), item).is_err(), "{bad}");
        }
        let duplicate = quote! {
            impl Counter {
                fn new() -> Self { todo!() }
                pub fn get(&self) {}
                #[method(name = "get")]
                pub fn fetch(&self) {}
            }
        };
        assert!(plan(quote!(), duplicate).is_err());
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
            (quote!(), quote!(impl Counter { pub fn get(&self) {} })),
            (
                quote!(),
                quote!(impl Clone for Counter { fn new() -> Self { todo!() } }),
            ),
            (
                quote!(),
                quote!(
                    impl<T> Counter<T> {
                        fn new() -> Self {
                            todo!()
                        }
                    }
                ),
            ),
            (quote!(), quote!(impl [u8] { fn new() -> Self { todo!() } })),
            (
                quote!(),
                quote!(impl Counter { fn new() -> Self { todo!() } pub fn take(self) {} }),
            ),
            (
                quote!(),
                quote!(impl Counter { fn new() -> Self { todo!() } pub fn f<T>(&self, x: T) {} }),
            ),
            (
                quote!(),
                quote!(impl Counter { fn new() -> Self { todo!() } pub async fn f(&self) {} }),
            ),
            (
                quote!(),
                quote!(impl Counter { fn new(&self) -> Self { todo!() } }),
            ),
            (
                quote!(),
                quote!(impl Counter { fn new() -> Self { todo!() } pub fn f(&self, #[env] x: u8) {} }),
            ),
            (
                quote!(),
                quote!(impl Counter { fn new() -> Self { todo!() } #[method] fn f(&self) {} }),
            ),
            (
                quote!(bogus),
                quote!(impl Counter { fn new() -> Self { todo!() } }),
            ),
        ] {
            let out = expand(attr, item).to_string();
            assert!(out.contains("compile_error"), "{out}");
            assert!(!out.contains("# [env]"), "{out}");
            assert!(!out.contains("# [method"), "{out}");
        }
    }
}
