//! `#[shoal::task]`: turns a plain function into a registered shoal task.
//!
//! For
//!
//! ```ignore
//! #[shoal::task]
//! pub fn count_letters(path: String) -> shoal::Result<u64> { /* … */ }
//! ```
//!
//! it emits:
//!
//! - a unit struct `count_letters` (the *task handle*, passed to
//!   `client.submit(count_letters, …)`), with the original body as the
//!   associated function `count_letters::call(path)`;
//! - an `impl shoal::Task` that names the parameter types (a `&Archived<T>`
//!   parameter is fed by a `T`-valued argument) and the output type (`T` of
//!   a `Result<T, E>`, else the return type itself);
//! - a `TaskEntry` in the link-time registry under
//!   `module_path!()::count_letters`, whose type-erased entry point reads
//!   each parameter from its input object and runs the body.
//!
//! Rules, checked here with errors that point at the offending code: a free
//! function, not one in an `impl` or `trait` block (`context.rs` finds the
//! block in the source, since no expansion can report it first); no `self`,
//! no generics, no `async`; parameters are plain identifiers; a reference
//! parameter must be `&Archived<T>`.

mod context;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType, Type, parse_macro_input};

/// Register a free function as a shoal task.
///
/// ```ignore
/// #[shoal::task]
/// fn count_letters(path: String) -> shoal::Result<u64> {
///     Ok(std::fs::read(&path)?.len() as u64)
/// }
///
/// let counts = client.map(count_letters, &files)?;     // the handle
/// let n = count_letters::call("a.txt".to_string());    // the function itself
/// ```
///
/// - **The handle.** The function's name becomes a unit struct, the task
///   handle you pass to `submit`, `map` and `.lazy(…)`; the body is
///   `name::call(…)`. So a local variable cannot have the task's name:
///   `let total = client.submit(total, …)` is an error ("interpreted as a
///   unit struct"); name the result after what it holds (`let sum = …`).
/// - **Where.** On a free function (module level, or inside a function):
///   not on a method or an associated function in an `impl` or `trait`
///   block (a compile error says to move it out; the macro finds the block
///   in the source file, see `context.rs`), no `self`, no generics, no
///   `async`.
/// - **Parameters** are plain names of `shoal::Data` types, taken by value
///   (`T`) or in place (`&Archived<T>`); several make the argument a tuple.
/// - **The result** is a `Data` type `T`, or `Result<T, E>` written as such
///   (`shoal::Result<T>`, `io::Result<T>` too) with `E` an
///   `std::error::Error + Send + Sync + 'static` (kept whole: its type,
///   `source()` chain, and a downcast in the threads mode) or any
///   `Display` type (its text). A `Result` under an alias is refused, since
///   its `Err` would be stored as a success. A task declared `-> Alias<T>`
///   (or `Result<Alias<T>, E>`) has output `T` and returns one of its
///   inputs as its result, `Alias::input(i)` (no copy in the threads mode).
/// - **`#[shoal::task(impure)]`**: every call runs; equal calls are never
///   shared (for tasks that read a clock, a random source, or the outside
///   world).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut pure = true;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("impure") {
            pure = false;
            Ok(())
        } else {
            Err(meta.error(
                "#[shoal::task] takes only `impure` (every call runs, none is shared); \
                 set other options per call with `submit_with`",
            ))
        }
    });
    parse_macro_input!(attr with parser);
    let func = parse_macro_input!(item as ItemFn);
    let block = proc_macro::Span::call_site()
        .local_file()
        .and_then(|file| context::block_at(&file, proc_macro::Span::call_site().line()));
    if let Some(refused) = not_a_free_function(&func, block) {
        return refused.into();
    }
    match expand(func, pure) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The error for a task written as a method or an associated function
/// (`block` is what surrounds it, if known: see [`context`]), with the
/// function left as it was, so that this is the only error: its callers
/// still find it. `None` for a free function.
fn not_a_free_function(func: &ItemFn, block: Option<context::Block>) -> Option<TokenStream2> {
    let name = &func.sig.ident;
    let receiver = func.sig.receiver().is_some();
    let block = match block {
        Some(context::Block::Trait) => "trait",
        Some(context::Block::Impl) => "impl",
        _ if receiver => "impl",
        _ => return None,
    };
    let why = if receiver {
        format!(
            "; a task cannot take `self`: pass what `fn {name}` reads from `self` as parameters \
             (they must be `shoal::Data`, e.g. a `#[shoal::data]` struct)"
        )
    } else {
        format!("; call it there as `{name}::call(…)`, or run it with `client.submit({name}, …)`")
    };
    let message = format!(
        "`#[shoal::task]` must be on a free function at module level: move `fn {name}` out of the `{block}` \
         block{why}"
    );
    let error = syn::Error::new(name.span(), message).to_compile_error();
    Some(quote!(#error #func))
}

/// Register a free function as a bag function (`shoal::bag`): an element
/// function a `Bag` applies in whatever process holds the partition.
///
/// ```ignore
/// #[shoal::func]
/// fn words(line: String) -> Vec<String> {
///     line.split_whitespace().map(str::to_string).collect()
/// }
///
/// let counts = bag::read_text(&dir, "*.txt")?.flat_map(words).frequencies();
/// ```
///
/// Like `#[shoal::task]`, the name becomes a unit struct (the handle passed
/// to `map`, `filter`, `flat_map`, `map_partitions`, `topk`) and the body is
/// `name::call(x)`; the function is registered under its module path and
/// name, so every process of the binary finds it. It takes exactly one
/// parameter, by value, and returns a value (`bool` makes it usable by
/// `filter`, a `Vec`/`Option`/other collection by `flat_map`, an `Ord` type
/// as a `topk` key, an `Eq + Hash` type as a `groupby`/`foldby` key). Its
/// parameter and return types (and the item type of a `Vec<C>`/`Option<C>`
/// return, and `(B, Vec<A>)`, what `groupby` by `fn(A) -> B` makes) are
/// registered as bag element types.
#[proc_macro_attribute]
pub fn func(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = TokenStream2::from(attr);
        return syn::Error::new(attr.span(), "#[shoal::func] takes no options").to_compile_error().into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let block = proc_macro::Span::call_site()
        .local_file()
        .and_then(|file| context::block_at(&file, proc_macro::Span::call_site().line()));
    if let Some(refused) = not_a_free_function(&func, block) {
        return refused.into();
    }
    match expand_func(func) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_func(func: ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(a.span(), "a bag function cannot be async; make it a plain fn"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a bag function cannot be generic: it is found by name in every process, so its types must be concrete",
        ));
    }
    let mut input_tys = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(param) = input else {
            return Err(syn::Error::new(input.span(), "a bag function is a free function; it cannot take self"));
        };
        if !matches!(&*param.pat, Pat::Ident(_) | Pat::Wild(_)) {
            return Err(syn::Error::new(param.pat.span(), "a bag function's parameters must be plain names"));
        }
        if matches!(&*param.ty, Type::Reference(_) | Type::ImplTrait(_)) {
            return Err(syn::Error::new(
                param.ty.span(),
                "a bag function takes its elements by value (`x: A`, an owned `shoal::Data` type)",
            ));
        }
        input_tys.push(&*param.ty);
    }
    if !(1..=2).contains(&input_tys.len()) {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "a bag function takes one parameter, the element (`fn f(x: A) -> B`), or two for `fold` \
             (`fn add(acc: X, x: A) -> X`)",
        ));
    }
    let input_ty = input_tys[0];
    let output_ty = match &sig.output {
        ReturnType::Type(_, ty) => &**ty,
        ReturnType::Default => {
            return Err(syn::Error::new(sig.ident.span(), "a bag function returns a value: `fn f(x: A) -> B`"));
        }
    };
    let vis = &func.vis;
    let name = &sig.ident;
    let name_str = name.to_string();
    let attrs = &func.attrs;
    let body = &func.block;
    let inputs = &sig.inputs;
    let output = &sig.output;
    // The item type of a `Vec<C>` or `Option<C>` return: what `flat_map`
    // makes, registered too.
    let flat_item = match output_ty {
        Type::Path(p)
            if p.qself.is_none()
                && let Some(last) = p.path.segments.last()
                && (last.ident == "Vec" || last.ident == "Option")
                && let PathArguments::AngleBracketed(args) = &last.arguments
                && let Some(GenericArgument::Type(inner)) = args.args.first() =>
        {
            Some(quote!(::shoal::bag_item!(#inner);))
        }
        _ => None,
    };
    let doc = format!("The `{name_str}` bag function: pass it to a `Bag`'s `map`, `filter`, `flat_map`…");
    // What the registry fingerprint holds of it besides its name.
    let signature = format!("({}) {}", quote!(#inputs), quote!(#output));
    let p = quote!(::shoal::bag::__private);
    let impls = if let [x, y] = input_tys[..] {
        quote! {
            impl #p::Call2<#x, #y> for #name {
                type Out = #output_ty;
                fn call(__a: #x, __b: #y) -> #output_ty {
                    #name::call(__a, __b)
                }
            }

            impl ::shoal::bag::BagFn2<#x, #y> for #name {
                fn name(&self) -> &'static str {
                    ::core::concat!(::core::module_path!(), "::", #name_str)
                }
            }

            fn __fns() -> #p::FuncFns {
                #[allow(unused_imports)]
                use #p::{FoldProbe as _, MergeProbe as _, NoFoldProbe as _, NoMergeProbe as _};
                let __probe = &#p::FnProbe::<#name, (#x, #y), #output_ty>::NEW;
                #p::fold_fns(__probe.fold_fn(), __probe.merge_fn())
            }
        }
    } else {
        quote! {
            impl #p::Call<#input_ty> for #name {
                type Out = #output_ty;
                fn call(__x: #input_ty) -> #output_ty {
                    #name::call(__x)
                }
            }

            impl ::shoal::bag::BagFn<#input_ty> for #name {
                fn name(&self) -> &'static str {
                    ::core::concat!(::core::module_path!(), "::", #name_str)
                }
            }

            fn __fns() -> #p::FuncFns {
                #[allow(unused_imports)]
                use #p::{FilterProbe as _, FlatProbe as _, KeyProbe as _, NoFilterProbe as _, NoFlatProbe as _,
                         NoKeyProbe as _, NoTopkProbe as _, TopkProbe as _};
                let __probe = &#p::FnProbe::<#name, #input_ty, #output_ty>::NEW;
                #p::base_fns::<#name, #input_ty, #output_ty>(
                    __probe.filter_fn(),
                    __probe.flat_fn(),
                    __probe.topk_fn(),
                    __probe.key_fns(),
                )
            }

            // What `groupby` by this function makes: `(key, elements)`.
            ::shoal::__bag_item_one!((#output_ty, ::std::vec::Vec<#input_ty>));
        }
    };
    Ok(quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        impl #name {
            #(#attrs)*
            #vis fn call(#inputs) #output #body
        }

        const _: () = {
            #impls

            #[::shoal::__private::linkme::distributed_slice(#p::FUNCS)]
            #[linkme(crate = ::shoal::__private::linkme)]
            static __FUNC: #p::FuncEntry = #p::FuncEntry {
                name: ::core::concat!(::core::module_path!(), "::", #name_str),
                signature: #signature,
                fns: __fns,
            };

            #(::shoal::bag_item!(#input_tys);)*
            ::shoal::bag_item!(#output_ty);
            #flat_item
        };
    })
}

/// Make a struct or enum a shoal data type: derives rkyv's `Archive,
/// Serialize, Deserialize` (through `::shoal::rkyv`, so the user's crate
/// needs no rkyv dependency of its own) and `Clone, Debug`, everything the
/// `shoal::Data` bound asks for. `#[shoal::data(no_clone)]` or
/// `(no_debug)` leaves out a derive the type implements by hand.
#[proc_macro_attribute]
pub fn data(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = parse_macro_input!(item as syn::DeriveInput);
    match expand_data(TokenStream2::from(attr), item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_data(attr: TokenStream2, item: syn::DeriveInput) -> syn::Result<TokenStream2> {
    let (mut clone, mut debug) = (true, true);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("no_clone") {
            clone = false;
            Ok(())
        } else if meta.path.is_ident("no_debug") {
            debug = false;
            Ok(())
        } else {
            Err(meta.error("#[shoal::data] takes `no_clone` or `no_debug` (to implement those by hand)"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    if let syn::Data::Union(u) = &item.data {
        return Err(syn::Error::new(u.union_token.span(), "#[shoal::data] works on structs and enums, not unions"));
    }
    let clone = clone.then(|| quote!(::core::clone::Clone,));
    let debug = debug.then(|| quote!(::core::fmt::Debug,));
    Ok(quote! {
        #[derive(::shoal::rkyv::Archive, ::shoal::rkyv::Serialize, ::shoal::rkyv::Deserialize, #clone #debug)]
        #[rkyv(crate = ::shoal::rkyv)]
        #item
    })
}

/// How one parameter is read from its input.
enum ParamKind {
    /// `name: T` — an owned `T`.
    Owned(Type),
    /// `name: &Archived<T>` — read in place; the argument is a `T`.
    Archived(Type),
    /// `name: Inputs<T>` — several inputs read in place, in order; the
    /// argument is a `Vec<T>` (a list of futures or lazy values).
    Inputs(Type),
}

fn expand(func: ItemFn, pure: bool) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(a.span(), "a shoal task cannot be async; make it a plain fn"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a shoal task cannot be generic: it is found by name in every process, so its types must be concrete",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new(v.span(), "a shoal task cannot be variadic"));
    }
    let mut kinds = Vec::new();
    let mut names = Vec::new();
    for input in &sig.inputs {
        let pat = match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(r.span(), "a shoal task is a free function; it cannot take self"));
            }
            FnArg::Typed(p) => p,
        };
        match &*pat.pat {
            Pat::Ident(_) | Pat::Wild(_) => {}
            other => {
                return Err(syn::Error::new(other.span(), "task parameters must be plain names"));
            }
        }
        kinds.push(param_kind(&pat.ty)?);
        names.push(format_ident!("__arg{}", names.len()));
    }

    let vis = &func.vis;
    let name = &sig.ident;
    let name_str = name.to_string();
    let attrs = &func.attrs;
    let body = &func.block;
    let inputs = &sig.inputs;
    let output = &sig.output;
    let (output_ty, fallible) = output_type(output);

    let params_ty = {
        let tys: Vec<TokenStream2> = kinds
            .iter()
            .map(|k| match k {
                ParamKind::Owned(t) | ParamKind::Archived(t) => quote!(#t),
                ParamKind::Inputs(t) => quote!(::std::vec::Vec<#t>),
            })
            .collect();
        match tys.len() {
            1 => {
                let t = &tys[0];
                quote!(::shoal::__private::One<#t>)
            }
            _ => quote!((#(#tys,)*)),
        }
    };
    // Each read goes through `glue::Param<T>`: a `Vec` parameter may take a
    // list input (assembled here, where the task runs), any other exactly
    // one object; method resolution picks the read (see `glue`).
    // Spanned at the parameter's type, so that a type that is not `Data`
    // is reported there.
    let reads = kinds.iter().zip(&names).enumerate().map(|(i, (kind, var))| match kind {
        ParamKind::Owned(t) => quote_spanned!(t.span()=>
            let #var = (&::shoal::__private::glue::Param::<#t>::new()).owned(__inputs, #i)?;
        ),
        ParamKind::Archived(t) => {
            let held = format_ident!("__held{}", i);
            quote_spanned!(t.span()=>
                let #held = (&::shoal::__private::glue::Param::<#t>::new()).held(__inputs, #i)?;
                let #var = ::shoal::__private::glue::archived::<#t>(&#held)?;
            )
        }
        ParamKind::Inputs(t) => quote_spanned!(t.span()=>
            let #var = ::shoal::__private::glue::inputs::<#t>(__inputs, #i)?;
        ),
    });
    let arity = kinds.len();
    let finish = finish(output, fallible, &kinds);
    let return_check = return_check(output, fallible);
    let pure_fn = (!pure).then(|| {
        quote!(
            fn pure(&self) -> bool {
                false
            }
        )
    });
    let signature = {
        let tys = sig.inputs.iter().map(|i| match i {
            FnArg::Typed(p) => {
                let t = &p.ty;
                quote!(#t).to_string()
            }
            FnArg::Receiver(_) => String::new(),
        });
        let ret = match output {
            ReturnType::Default => "()".to_string(),
            ReturnType::Type(_, t) => quote!(#t).to_string(),
        };
        format!("({}) -> {}", tys.collect::<Vec<_>>().join(", "), ret)
    };
    let doc =
        format!("The `{name_str}` task: pass it to `Client::submit`/`map`, or call `{name_str}::call(…)` directly.");
    let span = Span::call_site();
    let arity_check = quote_spanned! {span=>
        if __inputs.len() != #arity {
            return ::core::result::Result::Err(::shoal::__private::RunError::Input(
                ::shoal::__private::InputError(::std::format!(
                    "task {} takes {} arguments, got {}", #name_str, #arity, __inputs.len()
                )),
            ));
        }
    };

    Ok(quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        impl #name {
            #(#attrs)*
            #vis fn call(#inputs) #output #body
        }

        const _: () = {
            // The borrow in each read is what picks it (see `glue`).
            #[allow(clippy::needless_borrow)]
            fn __invoke(
                __inputs: &[::shoal::__private::Input],
            ) -> ::core::result::Result<::shoal::__private::Obj, ::shoal::__private::RunError> {
                #[allow(unused_imports)]
                use ::shoal::__private::glue::{ReadList as _, ReadOne as _};
                #arity_check
                #(#reads)*
                let __out = #name::call(#(#names),*);
                #finish
            }

            #[::shoal::__private::linkme::distributed_slice(::shoal::__private::TASKS)]
            #[linkme(crate = ::shoal::__private::linkme)]
            static __ENTRY: ::shoal::__private::TaskEntry = ::shoal::__private::TaskEntry::new(
                ::core::concat!(::core::module_path!(), "::", #name_str),
                #signature,
                ::core::concat!(::core::file!(), ":", ::core::line!()),
                __invoke,
            );

            #return_check

            impl ::shoal::Task for #name {
                type Params = #params_ty;
                type Output = #output_ty;
                fn entry(&self) -> &'static ::shoal::__private::TaskEntry {
                    &__ENTRY
                }
                #pure_fn
            }
        };
    })
}

/// `T` → owned; `&Archived<T>` → archived; any other reference → error.
fn param_kind(ty: &Type) -> syn::Result<ParamKind> {
    match ty {
        Type::Reference(r) => {
            if r.mutability.is_some() {
                return Err(syn::Error::new(r.span(), "a task parameter cannot be &mut: inputs are shared"));
            }
            if let Type::Path(p) = &*r.elem
                && p.qself.is_none()
                && let Some(last) = p.path.segments.last()
                && last.ident == "Archived"
                && let PathArguments::AngleBracketed(args) = &last.arguments
                && args.args.len() == 1
                && let Some(GenericArgument::Type(inner)) = args.args.first()
            {
                return Ok(ParamKind::Archived(inner.clone()));
            }
            Err(syn::Error::new(
                r.span(),
                "a task takes each input by value (`T`) or, to read it in place without a copy, \
                 as `&Archived<T>` (shoal::Archived); other references are not allowed",
            ))
        }
        Type::ImplTrait(t) => Err(syn::Error::new(t.span(), "a task parameter cannot be `impl Trait`")),
        // `Inputs<T>` (or `shoal::Inputs<'_, T>`): recognised by name, as
        // `&Archived<T>` is.
        Type::Path(p)
            if p.qself.is_none()
                && let Some(last) = p.path.segments.last()
                && last.ident == "Inputs"
                && let PathArguments::AngleBracketed(args) = &last.arguments
                && let Some(inner) = args.args.iter().find_map(|a| match a {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                }) =>
        {
            Ok(ParamKind::Inputs(inner.clone()))
        }
        other => Ok(ParamKind::Owned(other.clone())),
    }
}

/// The task's output type, and whether the function returns a `Result`
/// (any type whose last path segment is `Result`: `Result<T, E>`,
/// `shoal::Result<T>`, `io::Result<T>`), whose `Ok` type is the output.
fn output_type(output: &ReturnType) -> (TokenStream2, bool) {
    let ty = match output {
        ReturnType::Default => return (quote!(()), false),
        ReturnType::Type(_, ty) => ty,
    };
    if let Type::Path(p) = &**ty
        && let Some(last) = p.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(GenericArgument::Type(ok)) = args.args.first()
    {
        let ok = aliased(ok).unwrap_or(ok);
        return (quote!(#ok), true);
    }
    let ty = aliased(ty).unwrap_or(ty);
    (quote!(#ty), false)
}

/// `T` of a return type `Alias<T>` (recognised by name, as `Inputs<T>` is):
/// the task's output is `T`, its result one of its inputs.
fn aliased(ty: &Type) -> Option<&Type> {
    if let Type::Path(p) = ty
        && p.qself.is_none()
        && let Some(last) = p.path.segments.last()
        && last.ident == "Alias"
        && let PathArguments::AngleBracketed(args) = &last.arguments
        && args.args.len() == 1
        && let Some(GenericArgument::Type(inner)) = args.args.first()
    {
        return Some(inner);
    }
    None
}

/// Whether the task returns an `Alias<T>` (or a `Result` of one).
fn returns_alias(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else { return false };
    if let Type::Path(p) = &**ty
        && let Some(last) = p.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(GenericArgument::Type(ok)) = args.args.first()
    {
        return aliased(ok).is_some();
    }
    aliased(ty).is_some()
}

/// The code that turns the body's return value `__out` into the task's
/// result object. An `Err` becomes a `TaskError`: by autoref specialization
/// (the error type is concrete here), an `std::error::Error` keeps its type,
/// `source()` chain and itself; another `Display` type its text.
fn finish(output: &ReturnType, fallible: bool, kinds: &[ParamKind]) -> TokenStream2 {
    let wrap = if returns_alias(output) {
        // Each parameter's declared type, which an alias must match (a
        // fan-in's list cannot be a result).
        let declared = kinds.iter().map(|k| match k {
            ParamKind::Owned(t) | ParamKind::Archived(t) => quote!(::core::option::Option::Some((
                ::core::any::TypeId::of::<#t>(),
                ::core::any::type_name::<#t>()
            ))),
            ParamKind::Inputs(_) => quote!(::core::option::Option::None),
        });
        quote!(::shoal::__private::finish_alias(__value, __inputs, &[#(#declared),*]))
    } else {
        quote!(::shoal::__private::finish_value(__value))
    };
    if !fallible {
        return quote!({
            let __value = __out;
            #wrap
        });
    }
    let span = match output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => Span::call_site(),
    };
    quote_spanned! {span=>
        match __out {
            ::core::result::Result::Ok(__value) => #wrap,
            ::core::result::Result::Err(__error) => {
                #[allow(unused_imports)]
                use ::shoal::__private::{ViaDisplay as _, ViaError as _};
                ::core::result::Result::Err(::shoal::__private::Returned(__error).into_run_error())
            }
        }
    }
}

/// For a return type not written `Result<…>`: a check, at compile time,
/// that it is not a `Result` under another name (an alias), whose `Err`
/// would otherwise be stored as a success. The probe picks its method by
/// autoref specialization; the alias case yields a type that fails
/// `ReturnsPlainValue`, whose diagnostic says what to write.
fn return_check(output: &ReturnType, fallible: bool) -> TokenStream2 {
    let ReturnType::Type(_, ty) = output else { return TokenStream2::new() };
    if fallible {
        return TokenStream2::new();
    }
    let span = ty.span();
    quote_spanned! {span=>
        #[allow(dead_code)]
        fn __return_check() {
            #[allow(unused_imports)]
            use ::shoal::__private::{ProbePlain as _, ProbeResult as _};
            ::shoal::__private::require_plain_return((&::shoal::__private::Probe::<#ty>::NEW).check());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(src: &str) -> Result<String, String> {
        let func: ItemFn = syn::parse_str(src).map_err(|e| e.to_string())?;
        expand(func, true).map(|t| t.to_string()).map_err(|e| e.to_string())
    }

    #[test]
    fn archived_references_read_in_place_and_values_are_owned() {
        let ty: Type = syn::parse_str("&Archived<Vec<u8>>").unwrap();
        assert!(matches!(param_kind(&ty), Ok(ParamKind::Archived(t)) if quote!(#t).to_string() == "Vec < u8 >"));
        let ty: Type = syn::parse_str("&shoal::Archived<String>").unwrap();
        assert!(matches!(param_kind(&ty), Ok(ParamKind::Archived(_))));
        let ty: Type = syn::parse_str("Vec<u8>").unwrap();
        assert!(matches!(param_kind(&ty), Ok(ParamKind::Owned(_))));
        let ty: Type = syn::parse_str("shoal::Inputs<'_, Vec<u8>>").unwrap();
        assert!(matches!(param_kind(&ty), Ok(ParamKind::Inputs(t)) if quote!(#t).to_string() == "Vec < u8 >"));
    }

    #[test]
    fn other_references_are_refused_with_the_rule() {
        for bad in ["&Vec<u8>", "&mut Archived<u8>", "&str"] {
            let ty: Type = syn::parse_str(bad).unwrap();
            let Err(e) = param_kind(&ty) else { panic!("{bad} must be refused") };
            assert!(e.to_string().contains("&Archived<T>") || e.to_string().contains("&mut"), "{bad}: {e}");
        }
    }

    #[test]
    fn result_returns_are_fallible_with_their_ok_type() {
        let out = |s: &str| {
            let f: ItemFn = syn::parse_str(&format!("fn f() -> {s} {{ todo!() }}")).unwrap();
            let (ty, fallible) = output_type(&f.sig.output);
            (ty.to_string(), fallible)
        };
        assert_eq!(out("shoal::Result<u64>"), ("u64".into(), true));
        assert_eq!(out("Result<Vec<u8>, String>"), ("Vec < u8 >".into(), true));
        assert_eq!(out("std::io::Result<()>"), ("()".into(), true));
        assert_eq!(out("u64"), ("u64".into(), false));
        let f: ItemFn = syn::parse_str("fn f() {}").unwrap();
        assert_eq!(output_type(&f.sig.output).0.to_string(), "()");
    }

    #[test]
    fn an_alias_return_has_the_aliased_type_as_its_output() {
        let out = |s: &str| {
            let f: ItemFn = syn::parse_str(&format!("fn f() -> {s} {{ todo!() }}")).unwrap();
            let (ty, fallible) = output_type(&f.sig.output);
            (ty.to_string(), fallible, returns_alias(&f.sig.output))
        };
        assert_eq!(out("Alias<Vec<u8>>"), ("Vec < u8 >".into(), false, true));
        assert_eq!(out("shoal::Alias<u64>"), ("u64".into(), false, true));
        assert_eq!(out("Result<Alias<u64>, String>"), ("u64".into(), true, true));
        assert_eq!(out("Result<u64, String>"), ("u64".into(), true, false));
        assert_eq!(out("Vec<Alias<u64>>"), ("Vec < Alias < u64 > >".into(), false, false));
    }

    #[test]
    fn unsupported_functions_get_a_clear_error() {
        let cases = [
            ("async fn f(x: u64) -> u64 { x }", "async"),
            ("fn f<T>(x: T) -> u64 { 0 }", "generic"),
            ("fn f(&self) -> u64 { 0 }", "self"),
            ("fn f((a, b): (u64, u64)) -> u64 { a + b }", "plain names"),
            ("fn f(x: impl Into<u64>) -> u64 { 0 }", "impl Trait"),
        ];
        for (src, needle) in cases {
            let err = expand_str(src).expect_err(src);
            assert!(err.contains(needle), "{src}: {err}");
        }
    }

    #[test]
    fn returns_not_written_result_get_the_alias_probe_and_results_get_the_error_glue() {
        let plain = expand_str("fn f() -> MyResult<u64> { todo!() }").unwrap();
        assert!(plain.contains("require_plain_return") && plain.contains("Probe :: < MyResult < u64 > >"), "{plain}");
        assert!(!plain.contains("into_run_error"), "{plain}");
        let result = expand_str("fn f() -> Result<u64, String> { todo!() }").unwrap();
        assert!(!result.contains("require_plain_return") && result.contains("into_run_error"), "{result}");
        let unit = expand_str("fn f() {}").unwrap();
        assert!(!unit.contains("require_plain_return"), "{unit}");
    }

    #[test]
    fn impure_tasks_say_so_and_pure_ones_keep_the_default() {
        let func: ItemFn = syn::parse_str("fn f() -> u64 { 1 }").unwrap();
        let impure = expand(func.clone(), false).unwrap().to_string();
        assert!(impure.contains("fn pure (& self) -> bool { false }"), "{impure}");
        assert!(!expand(func, true).unwrap().to_string().contains("fn pure"));
    }

    #[test]
    fn data_derives_everything_the_bound_needs_through_shoal() {
        let item: syn::DeriveInput = syn::parse_str("struct P { x: u64 }").unwrap();
        let out = expand_data(TokenStream2::new(), item.clone()).unwrap().to_string();
        for needle in [":: shoal :: rkyv :: Archive", "rkyv (crate = :: shoal :: rkyv)", "Clone", "Debug"] {
            assert!(out.contains(needle), "{needle}: {out}");
        }
        let out = expand_data(quote!(no_clone), item.clone()).unwrap().to_string();
        assert!(!out.contains("Clone") && out.contains("Debug"), "{out}");
        let err = expand_data(quote!(copy), item).unwrap_err().to_string();
        assert!(err.contains("no_clone"), "{err}");
        let union: syn::DeriveInput = syn::parse_str("union U { a: u32 }").unwrap();
        assert!(expand_data(TokenStream2::new(), union).unwrap_err().to_string().contains("not unions"));
    }

    #[test]
    fn functions_in_impl_or_trait_blocks_and_methods_are_refused_and_kept() {
        use context::Block;
        let assoc: ItemFn = syn::parse_str("fn parse(s: String) -> u64 { 0 }").unwrap();
        for block in [None, Some(Block::Module), Some(Block::Other)] {
            assert!(not_a_free_function(&assoc, block).is_none(), "{block:?}");
        }
        for (block, word) in [(Block::Impl, "`impl` block"), (Block::Trait, "`trait` block")] {
            let out = not_a_free_function(&assoc, Some(block)).expect("refused").to_string();
            assert!(out.contains("must be on a free function at module level: move `fn parse` out of the"), "{out}");
            assert!(out.contains(word) && out.contains("parse::call"), "{out}");
            assert!(out.ends_with("fn parse (s : String) -> u64 { 0 }"), "the function stays: {out}");
        }
        let method: ItemFn = syn::parse_str("fn advance(&self, x: u64) -> u64 { x }").unwrap();
        let out = not_a_free_function(&method, None).expect("a method, wherever it is").to_string();
        assert!(out.contains("`impl` block") && out.contains("cannot take `self`"), "{out}");
    }

    #[test]
    fn bag_functions_take_one_or_two_owned_parameters_and_return_a_value() {
        let func = |src: &str| expand_func(syn::parse_str(src).unwrap()).map(|t| t.to_string());
        let one = func("fn words(line: String) -> Vec<String> { todo!() }").unwrap();
        assert!(one.contains("BagFn < String >") && one.contains("bag_item ! (String)"), "{one}");
        let two = func("fn add(a: u64, b: u64) -> u64 { a + b }").unwrap();
        assert!(two.contains("BagFn2 < u64 , u64 >") && two.contains("fold_fns"), "{two}");
        for (src, needle) in [
            ("fn f() -> u64 { 1 }", "one parameter"),
            ("fn f(a: u64, b: u64, c: u64) -> u64 { a }", "one parameter"),
            ("fn f(x: &str) -> u64 { 0 }", "by value"),
            ("fn f(x: u64) { }", "returns a value"),
            ("fn f<T>(x: T) -> T { x }", "generic"),
        ] {
            let err = func(src).expect_err(src).to_string();
            assert!(err.contains(needle), "{src}: {err}");
        }
    }

    #[test]
    fn one_parameter_is_wrapped_several_make_a_tuple() {
        let one = expand_str("fn f(x: u64) -> u64 { x }").unwrap();
        assert!(one.contains("type Params = :: shoal :: __private :: One < u64 >"), "{one}");
        let two = expand_str("fn f(x: u64, y: &Archived<String>) -> u64 { x }").unwrap();
        assert!(two.contains("type Params = (u64 , String ,)"), "{two}");
        let none = expand_str("fn f() -> u64 { 1 }").unwrap();
        assert!(none.contains("type Params = ()"), "{none}");
    }
}
